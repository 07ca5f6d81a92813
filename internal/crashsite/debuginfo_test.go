package crashsite

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestFuncVarsMemo: funcVars answers from DWARF once per pc, and what it
// hands out is the caller's own — a caller that overwrites its answer
// does not change the next one.
func TestFuncVarsMemo(t *testing.T) {
	// go test links without DWARF: a program of its own.
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	prog := "package main\n\n//go:noinline\nfunc sum(xs []int, depth int) int {\n\ttotal := 0\n\tfor _, x := range xs {\n\t\ttotal += x * depth\n\t}\n\treturn total\n}\n\nfunc main() { println(sum([]int{1, 2}, 3)) }\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "prog")
	cmd := exec.Command("go", "build", "-o", exe, src)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GO111MODULE=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	d, err := OpenDebugInfo(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var pc uint64
	for _, s := range mustSymbols(t, d) {
		if s.Name == "main.sum" {
			pc = s.Value + 1
		}
	}
	if pc == 0 {
		t.Fatal("main.sum not in the symbols")
	}
	vars, entry, err := d.funcVars(pc)
	if err != nil {
		t.Fatal(err)
	}
	if entry != pc-1 {
		t.Errorf("entry %#x, want %#x", entry, pc-1)
	}
	names := map[string]bool{}
	for _, v := range vars {
		names[v.name] = v.param
	}
	if !names["xs"] || !names["depth"] {
		t.Fatalf("vars of main.sum %v: want parameters xs and depth", names)
	}
	vars[0].name = "overwritten"
	again, _, err := d.funcVars(pc)
	if err != nil || len(again) != len(vars) || again[0].name == "overwritten" {
		t.Fatalf("second answer %v, %v: want the first, untouched", again, err)
	}
	if len(d.vars) != 1 {
		t.Errorf("memo holds %d answers, want 1", len(d.vars))
	}
	if _, _, err := d.funcVars(1); err == nil {
		t.Error("pc 1: want an error")
	}
	if _, _, err := d.funcVars(1); err == nil || len(d.vars) != 2 {
		t.Errorf("pc 1 again: err %v, memo %d; want the remembered error", err, len(d.vars))
	}
}

func mustSymbols(t *testing.T, d *DebugInfo) []elf.Symbol {
	t.Helper()
	syms, err := d.ef.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	return syms
}
