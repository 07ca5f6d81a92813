// Package repocheck owns the checks over the repository as a whole, run by
// its tests: every program a test or make target runs is installed by
// scripts/deps.sh, and the package layer rule of docs/architecture.md holds
// (imports only run down, no cycles). Test-only.
package repocheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Exec is one program a Go file runs, by name.
type Exec struct {
	Name string
	Pos  string // file:line, relative to the repository
}

// GoExecs lists the programs the Go files under root run by a name known
// at compile time: the first argument of exec.Command, exec.LookPath and
// testenv.Tool (the second of exec.CommandContext), and of any function of
// the same package that passes its own parameter there (a
// requireTool(t, name) helper), when
// that argument is a string literal or a local variable or constant
// assigned one. Programs named at run time (a victim built by the test,
// the daemon binary, a toolchain picked from a table) are not seen; run
// such programs through testenv.Tool when they are installed ones.
// Directories with their own go.mod (tools/jaeger) and dot-directories are
// skipped.
func GoExecs(root string) ([]Exec, error) {
	fset := token.NewFileSet()
	files := map[string][]*ast.File{} // by directory: a package and its tests
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || exists(filepath.Join(path, "go.mod"))) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
		files[filepath.Dir(path)] = append(files[filepath.Dir(path)], f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Exec
	for _, pkg := range files {
		out = append(out, pkgExecs(root, fset, pkg)...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pos < out[j].Pos })
	return out, nil
}

// pkgExecs is GoExecs for the files of one directory.
func pkgExecs(root string, fset *token.FileSet, files []*ast.File) []Exec {
	wrappers := map[string]int{} // function name -> index of its program-name parameter
	for _, f := range files {
		findWrappers(f, wrappers)
	}
	var out []Exec
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			i, ok := nameArg(call, wrappers)
			if !ok || i >= len(call.Args) {
				return true
			}
			if name, ok := stringValue(call.Args[i]); ok {
				pos := fset.Position(call.Pos())
				rel, _ := filepath.Rel(root, pos.Filename)
				out = append(out, Exec{Name: name, Pos: fmt.Sprintf("%s:%d", rel, pos.Line)})
			}
			return true
		})
	}
	return out
}

// execFuncs are the calls whose argument names a program, and its index.
var execFuncs = map[string]int{
	"exec.Command": 0, "exec.CommandContext": 1, "exec.LookPath": 0, "testenv.Tool": 1,
}

func nameArg(call *ast.CallExpr, wrappers map[string]int) (int, bool) {
	switch fn := call.Fun.(type) {
	case *ast.SelectorExpr:
		if x, ok := fn.X.(*ast.Ident); ok {
			if i, ok := execFuncs[x.Name+"."+fn.Sel.Name]; ok {
				return i, true
			}
		}
	case *ast.Ident:
		i, ok := wrappers[fn.Name]
		return i, ok
	}
	return 0, false
}

// findWrappers records the functions of f that pass one of their string
// parameters on as a program name.
func findWrappers(f *ast.File, wrappers map[string]int) {
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		params := map[string]int{}
		i := 0
		for _, p := range fd.Type.Params.List {
			for _, n := range p.Names {
				params[n.Name] = i
				i++
			}
			if len(p.Names) == 0 {
				i++
			}
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			j, ok := nameArg(call, nil)
			if !ok || j >= len(call.Args) {
				return true
			}
			if id, ok := call.Args[j].(*ast.Ident); ok {
				if k, ok := params[id.Name]; ok {
					wrappers[fd.Name.Name] = k
				}
			}
			return true
		})
	}
}

// stringValue is e's value when it is a string literal, or an identifier
// declared in the same file from one (x := "bpftool", const tool = "jq").
func stringValue(e ast.Expr) (string, bool) {
	switch x := e.(type) {
	case *ast.BasicLit:
		if x.Kind == token.STRING {
			s, err := strconv.Unquote(x.Value)
			return s, err == nil
		}
	case *ast.Ident:
		if x.Obj == nil {
			return "", false
		}
		switch d := x.Obj.Decl.(type) {
		case *ast.AssignStmt:
			for i, l := range d.Lhs {
				if id, ok := l.(*ast.Ident); ok && id.Name == x.Name && len(d.Rhs) == len(d.Lhs) {
					return stringValue(d.Rhs[i])
				}
			}
		case *ast.ValueSpec:
			for i, n := range d.Names {
				if n.Name == x.Name && i < len(d.Values) {
					return stringValue(d.Values[i])
				}
			}
		}
	}
	return "", false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
