package integration

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/go-delve/delve/pkg/proc"
	"github.com/go-delve/delve/pkg/proc/core"
)

// TestCrashCoreOpensInDelve: with capture.core on, the daemon saves a core
// of the frozen process; delve opens it and lists exactly the goroutines
// the report has, and the report carries the crashing frames' typed
// arguments that delve read from it.
func TestCrashCoreOpensInDelve(t *testing.T) {
	startDaemonCheck(t)
	path := shared.victim(t, variants[0]) // Go 1.26 with DWARF
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_CAPTURE_CORE_ENABLED=true", "MAPSENTRY_CAPTURE_CORE_KEEP=2")
	cr := crashVictim(t, d, path, "writes")

	c := cr.Capture.Core
	if c == nil || c.Threads < 2 || c.Copied == 0 {
		t.Fatalf("report core %+v (capture errors %v)", c, cr.Capture.Errors)
	}
	if _, err := os.Stat(c.Path); err != nil {
		t.Fatal(err)
	}
	grp, err := core.OpenCore(c.Path, path, nil)
	if err != nil {
		t.Fatalf("delve cannot open the daemon's core: %v", err)
	}
	defer grp.Detach(false)
	gs, _, err := proc.GoroutinesInfo(grp.Selected, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var theirs, ours []int64
	for _, g := range gs {
		theirs = append(theirs, g.ID)
	}
	for _, g := range cr.Goroutines {
		ours = append(ours, g.ID)
	}
	sort.Slice(theirs, func(i, j int) bool { return theirs[i] < theirs[j] })
	sort.Slice(ours, func(i, j int) bool { return ours[i] < ours[j] })
	if len(theirs) != len(ours) {
		t.Fatalf("delve lists goroutines %v, the report %v", theirs, ours)
	}
	for i := range ours {
		if ours[i] != theirs[i] {
			t.Fatalf("delve lists goroutines %v, the report %v", theirs, ours)
		}
	}

	f := cr.Frames
	if f == nil || f.Error != "" || len(f.Frames) == 0 {
		t.Fatalf("no frames from delve: %+v", f)
	}
	found := false
	for _, fr := range f.Frames {
		for _, a := range fr.Args {
			found = found || (a.Name == "m" && a.Type == "*internal/runtime/maps.Map")
		}
		for _, a := range append(fr.Args, fr.Locals...) {
			if a.Value != "" {
				t.Errorf("%s: value of %s recorded without report.values", fr.Function, a.Name)
			}
		}
	}
	if !found {
		t.Errorf("no frame with argument m *internal/runtime/maps.Map: %+v", f.Frames)
	}
}
