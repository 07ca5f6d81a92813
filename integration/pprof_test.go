package integration

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestShowPprof: `mapsentry show ID --pprof FILE` writes a goroutine
// profile on which `go tool pprof -traces` lists exactly the goroutines
// and stacks `mapsentry show` prints, and `-top` exactly their functions.
func TestShowPprof(t *testing.T) {
	v := variant{"go126", "go1.26", false, "go1.26", "swiss"}
	path := shared.diagnoseVictim(t, v)
	d := startDaemon(t, filepath.Join(shared.dir, "diagnose"), "")
	cr, _, ok := d.diagnoseCrash(t, path, "holders")
	if !ok {
		t.Fatal("victim livelocked")
	}
	prof := filepath.Join(t.TempDir(), "goroutines.pb.gz")
	d.showText(t, cr.ID, "--pprof", prof)
	show := d.showText(t, cr.ID)

	// What show prints: "goroutine N [...]:" then function lines (a
	// function line is followed by its "\tfile:line" line).
	want := map[string][]string{}
	var cur string
	for _, line := range strings.Split(show, "\n") {
		if m := regexp.MustCompile(`^goroutine (\d+) \[`).FindStringSubmatch(line); m != nil {
			cur = m[1]
			want[cur] = nil
			continue
		}
		if cur == "" || line == "" || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "created by") || strings.HasPrefix(line, "...") {
			if line == "" {
				cur = ""
			}
			continue
		}
		fn := line
		if i := strings.LastIndex(fn, "("); i > 0 {
			fn = fn[:i]
		}
		want[cur] = append(want[cur], fn)
	}
	if len(want) < 5 {
		t.Fatalf("show printed %d goroutines:\n%s", len(want), show)
	}

	out, err := exec.Command("go", "tool", "pprof", "-traces", prof).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -traces: %v\n%s", err, out)
	}
	got := map[string][]string{}
	label := regexp.MustCompile(`^\s*(\w+):\s+(.*)$`)
	for _, block := range strings.Split(string(out), "-----------+-------------------------------------------------------")[1:] {
		var id string
		var fns []string
		for _, line := range strings.Split(block, "\n") {
			if m := label.FindStringSubmatch(line); m != nil {
				if m[1] == "goroutine" {
					id = m[2]
				}
				continue
			}
			line = strings.TrimSuffix(strings.TrimSpace(line), " (inline)")
			if f := strings.Fields(line); len(f) > 0 {
				fns = append(fns, f[len(f)-1])
			}
		}
		if id != "" {
			got[id] = fns
		}
	}
	if len(got) != len(want) {
		t.Errorf("pprof -traces lists %d goroutines, show %d", len(got), len(want))
	}
	for id, fns := range want {
		if !slices.Equal(got[id], fns) {
			t.Errorf("goroutine %s: pprof -traces stack %q, show %q\n%s", id, got[id], fns, show)
		}
	}

	out, err = exec.Command("go", "tool", "pprof", "-top", "-nodecount=100000", "-nodefraction=0", "-edgefraction=0", prof).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -top: %v\n%s", err, out)
	}
	topFns := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && strings.HasSuffix(f[1], "%") {
			topFns[f[5]] = true
		}
	}
	showFns := map[string]bool{}
	for _, fns := range want {
		for _, fn := range fns {
			showFns[fn] = true
		}
	}
	if a, b := keys(topFns), keys(showFns); !slices.Equal(a, b) {
		t.Errorf("pprof -top functions %q, show's %q", a, b)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
