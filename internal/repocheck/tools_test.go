package repocheck

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// repoRoot is the directory holding the main module's go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for !exists(filepath.Join(dir, "go.mod")) {
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	return dir
}

// TestEveryProgramRunIsInstalled: every program that Go code, a script a
// test or make target runs, or a make recipe executes has a line in
// scripts/deps.sh (or comes with the machine or with Debian's essential
// set). A fresh machine then passes `make test` after `make deps`.
func TestEveryProgramRunIsInstalled(t *testing.T) {
	root := repoRoot(t)
	deps, err := ReadDeps(root)
	if err != nil {
		t.Fatal(err)
	}
	execs, err := GoExecs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range execs {
		if strings.Contains(e.Name, "/") && !filepath.IsAbs(e.Name) {
			continue // ./something: a file of the test's own
		}
		if !deps.Provides(e.Name) {
			t.Errorf("%s runs %q, which scripts/deps.sh does not install: add `tool %s DEBIAN-PACKAGE` "+
				"(or `path`/`build`) to scripts/deps.sh", e.Pos, e.Name, filepath.Base(e.Name))
		}
	}
	for _, c := range shellCommandsRun(t, root) {
		if !deps.Provides(c.name) {
			t.Errorf("%s runs %q, which scripts/deps.sh does not install: add `tool %s DEBIAN-PACKAGE` to scripts/deps.sh",
				c.where, c.name, c.name)
		}
	}
	// bpf2go (go generate ./bpf: make generate, check-generated) runs
	// clang and llvm-strip itself, out of sight of both scans.
	if b, err := os.ReadFile(filepath.Join(root, "bpf", "gen.go")); err == nil && strings.Contains(string(b), "bpf2go") {
		for _, p := range []string{"clang", "llvm-strip"} {
			if !deps.Provides(p) {
				t.Errorf("bpf/gen.go: bpf2go runs %s, which scripts/deps.sh does not install", p)
			}
		}
	}
}

// TestScannersSeeKnownPrograms keeps the scanners honest: programs the
// repository is known to run must be found, or a green
// TestEveryProgramRunIsInstalled would mean nothing.
func TestScannersSeeKnownPrograms(t *testing.T) {
	root := repoRoot(t)
	execs, err := GoExecs(root)
	if err != nil {
		t.Fatal(err)
	}
	var goNames []string
	for _, e := range execs {
		goNames = append(goNames, e.Name)
	}
	for _, want := range []string{"bpftool", "systemd-analyze", "setpriv", "go"} {
		if !slices.Contains(goNames, want) {
			t.Errorf("the Go scan does not see %s (it found %v)", want, goNames)
		}
	}
	var shNames []string
	for _, c := range shellCommandsRun(t, root) {
		shNames = append(shNames, c.name)
	}
	for _, want := range []string{"curl", "jq", "apt-get", "gofmt", "sha256sum", "cmp"} {
		if !slices.Contains(shNames, want) {
			t.Errorf("the shell scan does not see %s (it found %v)", want, shNames)
		}
	}
}

func TestShellCommands(t *testing.T) {
	src := `#!/bin/bash
# comment: rm -rf nothing
set -euo pipefail
x="$(cd "$(dirname "$0")" && pwd)"
FOO=1 curl -fsS "$x" | jq -r '.a | length' >/dev/null 2>&1
tool() { command -v "$1" >/dev/null; }
tool clang clang
if [[ -x "$bin" && $(id -u) -ne 0 ]]; then exec mytool --flag; fi
for i in $(seq 3); do sleep 1; done
cat >"$dir/c.yaml" <<YAML
not: a command
YAML
"$root/bin/x" || echo no
xargs -n1 dirname < list
echo "quoted; notacommand"
`
	got := ShellCommands(src)
	want := []string{"dirname", "curl", "jq", "id", "mytool", "seq", "sleep", "cat", "xargs", "dirname"}
	if !slices.Equal(got, want) {
		t.Errorf("ShellCommands = %v, want %v", got, want)
	}
}

type shellCmd struct{ name, where string }

// shellCommandsRun lists what the make recipes, .ci/run and the scripts
// they (or Go tests) run execute. Scripts reached from nowhere (run by hand:
// build-jaeger-ui.sh, screenshot-trace.sh) are not required.
func shellCommandsRun(t *testing.T, root string) []shellCmd {
	t.Helper()
	var out []shellCmd
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	recipes := makeRecipes(string(mk))
	for _, c := range ShellCommands(recipes) {
		out = append(out, shellCmd{c, "a Makefile recipe"})
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ShellCommands(string(ci)) {
		out = append(out, shellCmd{c, ".ci/run"})
	}
	// Scripts referred to from the Makefile, .ci/run, Go code, and other
	// such scripts.
	seen := map[string]bool{}
	queue := scriptRefs(recipes + string(ci))
	goRefs, err := goScriptRefs(root)
	if err != nil {
		t.Fatal(err)
	}
	queue = append(queue, goRefs...)
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		if seen[s] {
			continue
		}
		seen[s] = true
		b, err := os.ReadFile(filepath.Join(root, "scripts", s))
		if err != nil {
			t.Errorf("scripts/%s is referred to but cannot be read: %v", s, err)
			continue
		}
		for _, c := range ShellCommands(string(b)) {
			out = append(out, shellCmd{c, "scripts/" + s})
		}
		queue = append(queue, scriptRefs(string(b))...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].where+out[i].name < out[j].where+out[j].name })
	return out
}

var (
	shellComment = regexp.MustCompile(`(?m)^\s*#.*$`)
	scriptRef    = regexp.MustCompile(`scripts/([A-Za-z0-9_.-]+\.sh)`)
	goScriptRef  = regexp.MustCompile(`"scripts",\s*"([A-Za-z0-9_.-]+\.sh)"|"[^"\n]*scripts/([A-Za-z0-9_.-]+\.sh)[^"\n]*"`)
)

// scriptRefs finds the scripts a shell text names outside comments.
func scriptRefs(s string) []string {
	var out []string
	for _, m := range scriptRef.FindAllStringSubmatch(shellComment.ReplaceAllString(s, ""), -1) {
		out = append(out, m[1])
	}
	return out
}

// goScriptRefs finds scripts the Go code names in a string
// (filepath.Join(root, "scripts", NAME) or a path that ends in
// scripts/NAME, NAME ending in .sh): those it runs.
func goScriptRefs(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || exists(filepath.Join(path, "go.mod"))) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range goScriptRef.FindAllStringSubmatch(string(b), -1) {
			out = append(out, m[1]+m[2])
		}
		return nil
	})
	return out, err
}

// makeRecipes returns the Makefile's recipe lines (and $(shell ...)
// commands) as one shell script, with make's variables expanded where they
// name a program ($(GO) -> go, $(MAKE) -> make) and $$ turned into $.
func makeRecipes(mk string) string {
	vars := map[string]string{"MAKE": "make"}
	assign := regexp.MustCompile(`^([A-Z_]+)\s*[?:]?=\s*(.*)$`)
	var b strings.Builder
	lines := strings.Split(strings.ReplaceAll(mk, "\\\n", " "), "\n")
	for _, l := range lines {
		if m := assign.FindStringSubmatch(l); m != nil {
			vars[m[1]] = m[2]
		}
	}
	expand := func(s string) string {
		for k, v := range vars {
			if !strings.Contains(v, "$(") {
				s = strings.ReplaceAll(s, "$("+k+")", v)
			}
		}
		s = strings.ReplaceAll(s, "$$", "\x00")
		s = regexp.MustCompile(`\$\(shell ([^)]*)\)`).ReplaceAllString(s, "$$($1)")
		s = regexp.MustCompile(`\$\([A-Za-z_]+\)|\$[@<^*]`).ReplaceAllString(s, "x")
		return strings.ReplaceAll(s, "\x00", "$")
	}
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "\t"):
			b.WriteString(strings.TrimLeft(expand(l[1:]), "@-+"))
			b.WriteByte('\n')
		case strings.Contains(l, "$(shell "):
			for _, m := range regexp.MustCompile(`\$\(shell ([^)]*)\)`).FindAllStringSubmatch(l, -1) {
				b.WriteString(m[1])
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}
