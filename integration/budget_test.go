package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

// budgetRun is one crash under a tight freeze budget, as measured.
type budgetRun struct {
	FrozenNS   int64    `json:"frozen_ns"`
	HeldNS     int64    `json:"held_ns"`
	Deadline   bool     `json:"deadline_hit"`
	Cut        []string `json:"cut,omitempty"`
	Missing    []string `json:"missing,omitempty"`
	Goroutines int      `json:"goroutines"`
}

// TestFreezeBudget: with freeze.max=5ms, a crash of a process with 10,000
// more goroutines is released when the budget is spent, whatever the
// capture is doing; the report says what was cut; the process dies as it
// would have. The frozen times (from the BPF event) go to
// MAPSENTRY_BUDGET_OUT; bench/storm runs it 50 times
// (MAPSENTRY_BUDGET_RUNS), the suite 3, with no timing asserted.
func TestFreezeBudget(t *testing.T) {
	startDaemonCheck(t)
	n := envCount(t, "MAPSENTRY_BUDGET_RUNS", 3)
	path := shared.victim(t, variants[0])
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_FREEZE_MAX=5ms")
	var runs []budgetRun
	for i := 0; i < n; i++ {
		vic := startVictimWith(t, victimOpts{env: []string{"CRASH_IDLE_GOROUTINES=10000"}}, path, "writes", "wait")
		d.waitAttached(t, vic.pid)
		vic.release()
		code, livelock := vic.waitRace(t, 60*time.Second)
		if livelock != "" {
			t.Logf("victim livelocked, not counted: %s", livelock)
			continue
		}
		if code != 2 {
			t.Errorf("exit status %d, want 2", code)
		}
		cr := d.crashOf(t, vic.pid)
		r := budgetRun{FrozenNS: cr.Freeze.FrozenNS, HeldNS: cr.Freeze.AllThreadsStoppedNS, Deadline: cr.Freeze.DeadlineHit,
			Cut: cr.Capture.Cut, Missing: cr.Capture.Missing, Goroutines: len(cr.Goroutines)}
		runs = append(runs, r)
		checkBudgetReport(t, cr, r)
	}
	if len(runs) == 0 {
		t.Fatal("no crash measured")
	}
	frozen := make([]time.Duration, len(runs))
	for i, r := range runs {
		frozen[i] = time.Duration(r.FrozenNS)
	}
	sort.Slice(frozen, func(i, j int) bool { return frozen[i] < frozen[j] })
	t.Logf("budget 5ms, %d crashes: frozen from the BPF event p50 %s max %s", len(frozen), frozen[len(frozen)/2], frozen[len(frozen)-1])
	if out := os.Getenv("MAPSENTRY_BUDGET_OUT"); out != "" {
		b, _ := json.MarshalIndent(runs, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// checkBudgetReport: a report cut by the budget says so, and one that
// claims a whole capture has every goroutine.
func checkBudgetReport(t *testing.T, cr report.Crash, r budgetRun) {
	t.Helper()
	if cr.Freeze.Hold != report.HoldPtrace && cr.Freeze.Hold != report.HoldSigstop {
		t.Errorf("hold %q (%s), want ptrace", cr.Freeze.Hold, cr.Freeze.HoldNote)
	}
	switch {
	case r.Deadline && len(r.Cut)+len(r.Missing) == 0:
		t.Errorf("budget spent but the report names nothing cut or missing: %+v", r)
	case !r.Deadline && (len(r.Cut)+len(r.Missing) > 0 || r.Goroutines < 10000):
		t.Errorf("no deadline hit, yet %d goroutines, cut %v, missing %v", r.Goroutines, r.Cut, r.Missing)
	}
	if !cr.Freeze.Resumed || cr.Freeze.Released != "detached" {
		t.Errorf("freeze %+v: want resumed, released", cr.Freeze)
	}
}
