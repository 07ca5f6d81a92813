package repocheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/mapsentry/mapsentry/"

// layers reads the layer table of docs/architecture.md: for each of the
// module's packages (relative import path), its layer number; test helpers
// get -1.
func layers(t *testing.T, root string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "\n## Layers\n")
	if !ok {
		t.Fatal("docs/architecture.md has no `## Layers` section")
	}
	row := regexp.MustCompile(`(?m)^\| (\d+|test) [^|]*\| ([^|]*)\|`)
	name := regexp.MustCompile("`([a-z0-9/_-]+(?:/\\.\\.\\.)?)`")
	out := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		n := -1
		if m[1] != "test" {
			n, _ = strconv.Atoi(m[1])
		}
		for _, p := range name.FindAllStringSubmatch(m[2], -1) {
			if prev, dup := out[p[1]]; dup {
				t.Errorf("docs/architecture.md puts %s in layers %d and %d", p[1], prev, n)
			}
			out[p[1]] = n
		}
	}
	if len(out) == 0 {
		t.Fatal("docs/architecture.md: no rows in the layer table")
	}
	return out
}

// layerOf is the layer of pkg: its own row, or the row of its closest
// parent listed with a trailing `/...` (bench/...).
func layerOf(ls map[string]int, pkg string) (int, bool) {
	if n, ok := ls[pkg]; ok {
		return n, true
	}
	for p := pkg; strings.Contains(p, "/"); {
		p = p[:strings.LastIndex(p, "/")]
		if n, ok := ls[p+"/..."]; ok {
			return n, true
		}
	}
	return 0, false
}

type goPackage struct {
	path    string   // relative to the module
	imports []string // the module's packages, relative; and cilium/ebpf
}

func listPackages(t *testing.T, root string) []goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		p := goPackage{path: strings.TrimPrefix(f[0], module)}
		for _, imp := range f[1:] {
			switch {
			case strings.HasPrefix(imp, module):
				p.imports = append(p.imports, strings.TrimPrefix(imp, module))
			case strings.HasPrefix(imp, "github.com/cilium/ebpf"):
				p.imports = append(p.imports, "github.com/cilium/ebpf")
			}
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestLayerRule checks docs/architecture.md's layer rule over `go list`:
// a package imports only packages of lower layers (so there is no upward
// import and no cycle), no product package imports a test helper, and
// cilium/ebpf is imported only from the kernel layer up.
func TestLayerRule(t *testing.T) {
	root := repoRoot(t)
	ls := layers(t, root)
	kernel, ok := ls["bpf"]
	if !ok {
		t.Fatal("docs/architecture.md: bpf is in no layer")
	}
	for _, p := range listPackages(t, root) {
		lp, ok := layerOf(ls, p.path)
		if !ok {
			t.Errorf("package %s is in no layer of docs/architecture.md: add it to a row of the `## Layers` table "+
				"(above every package it imports, below every package that imports it)", p.path)
			continue
		}
		for _, imp := range p.imports {
			if imp == "github.com/cilium/ebpf" {
				if lp != -1 && lp < kernel {
					t.Errorf("%s (layer %d) imports cilium/ebpf: only the kernel layer (%d) and above may link BPF", p.path, lp, kernel)
				}
				continue
			}
			li, ok := layerOf(ls, imp)
			switch {
			case !ok:
				// reported as its own package
			case lp == -1:
				// test helpers may import anything
			case li == -1:
				t.Errorf("%s (layer %d) imports the test helper %s: only tests may", p.path, lp, imp)
			case li >= lp:
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must run down to a lower layer; "+
					"move code down, or the package to another layer in docs/architecture.md", p.path, lp, imp, li)
			}
		}
	}
	for p := range ls {
		if strings.HasSuffix(p, "/...") {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("docs/architecture.md's layer table lists %s, which does not exist", p)
		}
	}
}

// TestLayerRuleCatchesUpwardImports feeds the checker's rule a made-up
// upward import, so that a green TestLayerRule means something.
func TestLayerRuleCatchesUpwardImports(t *testing.T) {
	ls := layers(t, repoRoot(t))
	low, high := ls["goruntime"], ls["daemon"]
	if !(low < high) {
		t.Fatalf("goruntime (layer %d) is not below daemon (layer %d)", low, high)
	}
	if n, ok := layerOf(ls, "bench/attach"); !ok || n != -1 {
		t.Errorf("bench/attach: layer %d, %v; want the test layer through bench/...", n, ok)
	}
	for _, p := range []string{"client", "apitype", "apitype/live", "report"} {
		if ls[p] >= ls["bpf"] {
			t.Errorf("%s (layer %d) must sit below bpf (%d): the layer rule is what keeps BPF out of the client",
				p, ls[p], ls["bpf"])
		}
	}
}
