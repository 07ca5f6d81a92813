package probes

import (
	"context"
	"debug/elf"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// buildVictim builds the crash victim once per test binary run.
func buildVictim(t testing.TB, toolchain string, stripped bool) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "victim")
	var extra []string
	if stripped {
		extra = append(extra, "-ldflags=-s -w")
	}
	src, _ := filepath.Abs("../testdata/victims/crash")
	testenv.BuildGo(t, src, toolchain, out, nil, extra...)
	return out
}

func TestInspectEveryToolchain(t *testing.T) {
	for _, tc := range testenv.Toolchains() {
		for _, stripped := range []bool{false, true} {
			bin := buildVictim(t, tc, stripped)
			b, err := Inspect(bin)
			if err != nil {
				t.Fatalf("%s stripped=%v: %v", tc, stripped, err)
			}
			if b.Stripped != stripped || b.HasDWARF == stripped {
				t.Errorf("%s: stripped=%v dwarf=%v, want stripped=%v", tc, b.Stripped, b.HasDWARF, stripped)
			}
			names := map[string]bool{}
			for _, f := range b.Funcs {
				names[f.Name] = true
				if f.FileOffset == 0 || f.FileOffset >= f.Addr {
					t.Errorf("%s %s: file offset %#x for address %#x", tc, f.Name, f.FileOffset, f.Addr)
				}
			}
			for _, want := range []string{"runtime.fatal", "runtime.throw", "runtime.fatalpanic"} {
				if !names[want] {
					t.Errorf("%s: %s not resolved", tc, want)
				}
			}
			if tc != "go1.19" && !names["internal/runtime/maps.fatal"] {
				t.Errorf("%s: internal/runtime/maps.fatal not resolved", tc)
			}
			if g, err := b.Layout.G.Goid.Get("goid"); err != nil || g != 152 {
				t.Errorf("%s: goid offset %d, %v; want 152", tc, g, err)
			}
			// The unstripped build's symbol table is the oracle for the
			// pclntab-derived entry.
			if !stripped {
				checkAgainstSymtab(t, bin, b)
			}
		}
	}
}

func checkAgainstSymtab(t *testing.T, path string, b *Binary) {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	syms, err := ef.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	addr := map[string]uint64{}
	for _, s := range syms {
		addr[s.Name] = s.Value
	}
	for _, f := range b.Funcs {
		if a, ok := addr[f.Name]; ok && a != f.Addr {
			t.Errorf("%s: pclntab entry %#x, symtab %#x", f.Name, f.Addr, a)
		}
	}
}

func TestInspectRejectsNonGo(t *testing.T) {
	_, err := Inspect("/bin/sh")
	if !errors.Is(err, ErrNotGo) {
		t.Fatalf("Inspect(/bin/sh) = %v, want ErrNotGo", err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, []byte("#!/bin/sh\necho not elf\n"), 0o755)
	if _, err := Inspect(junk); !errors.Is(err, ErrNotGo) {
		t.Fatalf("Inspect(script) = %v, want ErrNotGo", err)
	}
}

// A corrupt .gopclntab must give an error naming the problem, never a panic
// and never a probe at a wrong address.
func TestInspectCorruptPclntab(t *testing.T) {
	src := buildVictim(t, "go1.26", true)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	sec := ef.Section(".gopclntab")
	off, size := int(sec.Offset), int(sec.Size)
	ef.Close()

	corrupt := func(name string, mutate func(b []byte)) {
		t.Run(name, func(t *testing.T) {
			b := append([]byte(nil), data...)
			mutate(b)
			p := filepath.Join(t.TempDir(), "bin")
			os.WriteFile(p, b, 0o755)
			bin, err := Inspect(p)
			if err == nil {
				// Surviving corruption is fine only if every entry still
				// passed the prologue check.
				for _, f := range bin.Funcs {
					if f.FileOffset == 0 {
						t.Errorf("%s accepted with offset 0", f.Name)
					}
				}
				return
			}
			t.Logf("rejected: %v", err)
		})
	}
	corrupt("zero header", func(b []byte) { clear(b[off : off+64]) })
	corrupt("bad magic", func(b []byte) { b[off] ^= 0xff })
	corrupt("garbage function table", func(b []byte) {
		for i := off + 64; i < off+size && i < off+64+4096; i++ {
			b[i] = byte(i * 7)
		}
	})
	corrupt("whole table random", func(b []byte) {
		x := uint32(1)
		for i := off; i < off+size; i++ {
			x = x*1664525 + 1013904223
			b[i] = byte(x >> 24)
		}
	})
	p := filepath.Join(t.TempDir(), "trunc")
	os.WriteFile(p, data[:off+size/2], 0o755)
	if _, err := Inspect(p); err == nil {
		t.Error("truncated binary inspected without error")
	}
}

func TestScope(t *testing.T) {
	s := Scope{Include: []string{"/srv/**", "/usr/local/bin/api-*"}, Exclude: []string{"/srv/tools/**"}}
	for path, want := range map[string]bool{
		"/srv/app/bin/server":        true,
		"/srv/tools/bin/noisy":       false,
		"/usr/local/bin/api-gateway": true,
		"/usr/local/bin/other":       false,
		"/srv/app/old (deleted)":     true,
		"/srvx/app":                  false,
	} {
		if got := s.Allows(path); got != want {
			t.Errorf("Allows(%q) = %v, want %v", path, got, want)
		}
	}
	if !(Scope{}).Allows("/anything") {
		t.Error("empty scope must allow everything")
	}
}

// Discovery inspects without DWARF, attaches, then applies the DWARF to a
// copy of the layout: the result must be what a full Inspect gives, and
// the first Binary must be left as it was (captures may hold it).
func TestDWARFAfterAttach(t *testing.T) {
	for _, tc := range testenv.Toolchains() {
		path := buildVictim(t, tc, false)
		fast, err := inspect(path, false)
		if err != nil {
			t.Fatal(err)
		}
		full, err := Inspect(path)
		if err != nil {
			t.Fatal(err)
		}
		if !fast.HasDWARF || fast.Layout.Source == "dwarf" || full.Layout.Source != "dwarf" {
			t.Fatalf("%s: sources %q and %q (has DWARF %v)", tc, fast.Layout.Source, full.Layout.Source, fast.HasDWARF)
		}
		before := *fast.Layout
		lay, err := fast.dwarfLayout(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*lay, *full.Layout) {
			t.Errorf("%s: refined layout differs from Inspect's:\n%+v\n%+v", tc, *lay, *full.Layout)
		}
		if !reflect.DeepEqual(before, *fast.Layout) {
			t.Errorf("%s: dwarfLayout changed the layout it was given", tc)
		}
		// The tables are what the attach used: they must agree with the
		// DWARF on the goid offset the probes read.
		if fast.Layout.G.Goid != lay.G.Goid {
			t.Errorf("%s: goid offset %d in the table, %d in DWARF", tc, fast.Layout.G.Goid, lay.G.Goid)
		}
		fast.Close()
		full.Close()
	}
}

// A binary with DWARF probed from the tables gets its DWARF applied
// afterwards, off the workers: the refiner picks it up from the queue and
// the layout the capture reads (Manager.Binary) becomes the DWARF's.
func TestDWARFRefinedAfterAttach(t *testing.T) {
	path := buildVictim(t, "go1.26", false)
	bin, err := inspect(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	if bin.Layout.Source != "table" {
		t.Fatalf("attach-first layout from %q", bin.Layout.Source)
	}
	m := NewManager(nil, Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w := &watched{id: 3, bin: bin}
	m.byID[w.id] = w
	m.setID(w.id, bin)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	m.startRefiner(ctx, &wg)
	if !m.queueRefine(w) {
		t.Fatal("refine queue refused the first binary")
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := m.Binary(w.id); b != nil && b.Layout.Source == "dwarf" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("DWARF not applied within 30 s")
		}
	}
}

// A live decode borrows discovery's inspection of a binary: the binary
// stays open while borrowed even when its probes are detached meanwhile,
// and closes when the last borrower gives it back. A binary whose DWARF
// is not applied yet, or a file rewritten in place (its inspection is of
// other contents), is not lent.
func TestBorrowOutlivesDetach(t *testing.T) {
	path := buildVictim(t, "go1.26", false)
	bin, err := inspect(path, false)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(nil, Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w := &watched{id: 4, bin: bin}
	m.bins[bin.Key], m.byID[w.id] = w, w
	m.setID(w.id, bin)

	lookup := func(b *Binary) bool {
		b.Table.Trim() // the next lookup reads the file again
		_, ok := b.Table.LookupFunc("main.main")
		return ok
	}
	if _, _, ok := m.Borrow(path); ok {
		t.Fatal("Borrow lent a binary whose DWARF is not applied yet")
	}
	lay, err := bin.dwarfLayout(path) // as refineLayout does
	if err != nil {
		t.Fatal(err)
	}
	bin.Layout = lay
	b1, release1, ok := m.Borrow(path)
	if !ok || b1 != bin {
		t.Fatalf("Borrow of a watched binary: %v, %v", b1, ok)
	}
	b2, release2, ok := m.Borrow(path)
	if !ok || b2 != bin {
		t.Fatal("second Borrow refused")
	}
	m.mu.Lock()
	m.forget(bin.Key, w)
	m.mu.Unlock()
	m.detach(w)
	if _, _, ok := m.Borrow(path); ok {
		t.Fatal("Borrow lent a detached binary")
	}
	if !lookup(b1) {
		t.Fatal("a borrowed binary was closed by detach")
	}
	release1()
	release1() // a release runs once
	if !lookup(b2) {
		t.Fatal("closed while a second borrower still holds it")
	}
	release2()
	if lookup(b2) {
		t.Fatal("the last release did not close the detached binary")
	}

	// Rewritten in place: same inode, other contents.
	bin2, err := inspect(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer bin2.Close()
	w2 := &watched{id: 5, bin: bin2}
	m.bins[bin2.Key] = w2
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write([]byte{0})
	f.Close()
	if _, _, ok := m.Borrow(path); ok {
		t.Fatal("Borrow lent the inspection of a file rewritten since")
	}
}
