package publish

import (
	"os"
	"strings"
	"testing"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// TestFullDiskSpoolsThenMovesIn: the store's disk fills up while the
// daemon runs: writes fail with ENOSPC, reports and updates go to the
// spool, and once space is back they are in the store, once each.
func TestFullDiskSpoolsThenMovesIn(t *testing.T) {
	f := newFixture(t, nil)
	testenv.Tmpfs(t, f.cfg.StateDir, 1<<20)
	f.run()
	a := newCrash(40)
	f.p.Publish(a)
	f.waitFor("first report stored", func(s Stats) bool { return s.Stored == 1 })
	filler := testenv.Fill(t, f.cfg.StateDir)

	b := newCrash(41)
	b.PartnersNote = strings.Repeat("goroutines and frames ", 10000) // ~220 KB: new pages
	f.p.Publish(b)
	st := f.waitFor("report spooled", func(s Stats) bool { return s.Spooled == 1 && s.State == StateDegraded })
	if !strings.Contains(st.Error, "no space left") {
		t.Errorf("store error %q, want ENOSPC", st.Error)
	}
	f.p.Update(a.ID, exit2)
	f.p.Update(b.ID, exit2)
	f.waitFor("updates handled", func(s Stats) bool { return s.Queued == 0 && s.Updates == 2 })

	os.Remove(filler)
	st = f.waitFor("store back", func(s Stats) bool {
		return s.State == StateOK && s.Spooled == 0 && s.Memory == 0 && s.DeferredUpdates == 0
	})
	// Both updates went the spool's way: a's from the store's copy, which
	// could still be read but not rewritten.
	if st.Stored != 2 || st.StoreErrors == 0 || st.SpoolWrites != 3 || st.MovedIn != 2 {
		t.Errorf("counters %+v", st)
	}
	noDrops(t, st)
	cs := f.stored()
	if len(cs) != 2 {
		t.Fatalf("%d reports stored, want 2", len(cs))
	}
	for _, c := range cs {
		if c.Freeze.ExitStatus == nil || *c.Freeze.ExitStatus != 2 {
			t.Errorf("report %s (pid %d) lost its exit status update", c.ID, c.Process.PID)
		}
		if c.Process.PID == 41 && len(c.PartnersNote) != len(b.PartnersNote) {
			t.Errorf("big report truncated")
		}
	}
}
