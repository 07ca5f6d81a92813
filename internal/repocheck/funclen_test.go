package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// maxFuncLines is the longest a function may be, from its func line to
// its closing brace (docs/architecture.md "Function length").
const maxFuncLines = 80

// longFuncs lists every function of the non-test Go files under root
// (testdata, hidden and build-cache directories skipped) longer than max
// lines, as "path:line name (n lines)".
func longFuncs(t *testing.T, root string, max int) []string {
	t.Helper()
	fset := token.NewFileSet()
	var long []string
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := e.Name()
		if e.IsDir() {
			if p != root && (name == "testdata" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
			if n := end.Line - start.Line + 1; n > max {
				rel, _ := filepath.Rel(root, p)
				long = append(long, rel+":"+strconv.Itoa(start.Line)+" "+fd.Name.Name+" ("+strconv.Itoa(n)+" lines)")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return long
}

// No function in the module is longer than maxFuncLines: a function that
// reads as a sequence of named steps is one a reviewer can check (issue
// 17: the capture path first; the rule holds everywhere).
func TestFunctionLength(t *testing.T) {
	for _, l := range longFuncs(t, "../..", maxFuncLines) {
		t.Errorf("%s: split it into named steps (at most %d lines)", l, maxFuncLines)
	}
}

// The check sees a long function and passes over a short one, a test
// file's and testdata's.
func TestFunctionLengthCatchesLongOnes(t *testing.T) {
	dir := t.TempDir()
	body := func(name string, lines int) string {
		return "func " + name + "() {\n" + strings.Repeat("\t_ = 0\n", lines-2) + "}\n"
	}
	write := func(rel, src string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("package x\n\n"+src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.go", body("long", 81)+body("fits", 80))
	write("a_test.go", body("longTest", 200))
	write("testdata/b.go", body("longData", 200))
	long := longFuncs(t, dir, maxFuncLines)
	if len(long) != 1 || long[0] != "a.go:3 long (81 lines)" {
		t.Fatalf("long functions: %q, want only a.go:3 long (81 lines)", long)
	}
}
