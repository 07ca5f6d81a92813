package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

// stormSize is how many crash victims race at the same instant.
const stormSize = 60

// stormReps is how many times each storm runs: once in the suite, more in
// bench/storm (MAPSENTRY_STORM_REPS); the measurements go to
// MAPSENTRY_STORM_OUT (JSON) when set.
func stormReps(t *testing.T) int { return envCount(t, "MAPSENTRY_STORM_REPS", 1) }

// storm is crash victims blocked on one shared pipe: closing it releases
// them all at once.
type storm struct {
	vics []*victim
	gate *os.File
}

func startStorm(t *testing.T, d *daemon, path string, n int, env ...string) *storm {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &storm{gate: w}
	t.Cleanup(func() { w.Close() })
	began := time.Now()
	for i := 0; i < n; i++ {
		s.vics = append(s.vics, startVictimWith(t, victimOpts{stdin: r, env: env}, path, "writes", "wait"))
	}
	r.Close()
	// Uprobes are per inode: attached for one victim, attached for all.
	d.waitAttached(t, s.vics[0].pid)
	t.Logf("%d victims started and probed in %s", n, time.Since(began).Round(time.Millisecond))
	return s
}

func (s *storm) release() { s.gate.Close() }

// finish waits up to within for every victim to exit. A victim still
// stopped or held then is a freeze never released: the test fails. One
// still running never reached a fatal error (a race can livelock a map,
// the victim's own fate; see waitRace): it is killed and reported, and
// more than one fails. Every other victim must exit 2.
func (s *storm) finish(t *testing.T, within time.Duration) {
	t.Helper()
	began := time.Now()
	defer func() {
		t.Logf("victims gone %s after the last check began", time.Since(began).Round(time.Millisecond))
	}()
	deadline := time.Now().Add(within)
	livelocks := 0
	for _, v := range s.vics {
		select {
		case <-v.done:
		case <-time.After(time.Until(deadline)):
		}
		select {
		case <-v.done:
			// A race may also corrupt the map and fault inside the runtime
			// ("unexpected fault address", then "fatal error: fault"): the
			// victim's fate, as without mapsentry.
			if code := v.cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(v.stderr.String(), "fatal error: ") {
				t.Errorf("victim %d: exit %d, stderr %q; want 2 and the runtime's fatal error", v.pid, code, firstLine(v.stderr.String()))
			}
			continue
		default:
		}
		if st := v.state(); st == 'T' || st == 't' {
			t.Errorf("victim %d still stopped (state %c) %s after the storm", v.pid, st, within)
			continue
		}
		livelocks++
		endWith(v.cmd.Process, v.done, syscall.SIGQUIT, 5*time.Second)
		t.Logf("victim %d never reached a fatal error (livelock), not counted: %s", v.pid, firstLine(v.stderr.String()))
	}
	if livelocks > 1 {
		t.Errorf("%d victims never reached a fatal error", livelocks)
	}
	exited, stopped := 0, 0
	for _, v := range s.vics {
		if v.cmd.ProcessState != nil && v.cmd.ProcessState.ExitCode() == 2 {
			exited++
		} else if st := v.state(); st == 'T' || st == 't' {
			stopped++
		}
	}
	t.Logf("round %s: %d victims, %d exited 2, %d left stopped, %d livelocked", t.Name(), len(s.vics), exited, stopped, livelocks)
}

// terminate sends the daemon SIGTERM and waits for it to stop: a graceful
// stop must drain and release everything, within a bound.
func (d *daemon) terminate(t *testing.T) {
	t.Helper()
	began := time.Now()
	defer func() { t.Logf("daemon stopped %s after SIGTERM", time.Since(began).Round(time.Millisecond)) }()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		t.Errorf("daemon still running 30s after SIGTERM")
	}
}

// stormDelays are when, after the crashes began, the daemon is stopped.
var stormDelays = []time.Duration{0, 10 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond}

// TestStormStop: the daemon gets SIGTERM 0, 10, 100 and 500 ms into a
// storm of stormSize simultaneous crashes: it stops holding, drains,
// captures or releases every crash, and no victim is left stopped; every
// victim dies exactly as without mapsentry (exit 2).
func TestStormStop(t *testing.T) {
	stormInterrupted(t, "SIGTERM", 10*time.Second, func(t *testing.T, d *daemon, _ string) { d.terminate(t) })
}

// TestStormKill: the daemon is SIGKILLed 0, 10, 100 and 500 ms into a
// storm, then restarted: ptrace holds were released by the kernel at its
// death, a SIGSTOP not yet taken over is swept by the restarted daemon,
// and no victim is stopped 5 s after the restart; every victim exits 2.
func TestStormKill(t *testing.T) {
	stormInterrupted(t, "SIGKILL", 5*time.Second, func(t *testing.T, d *daemon, state string) {
		d.kill()
		startDaemon(t, filepath.Join(shared.dir, "bin"), state)
	})
}

// stormInterrupted runs a storm per delay (stormReps times each), calls
// stop that long after the crashes began, and expects every victim to have
// died as without mapsentry within the given time.
func stormInterrupted(t *testing.T, name string, within time.Duration, stop func(t *testing.T, d *daemon, state string)) {
	startDaemonCheck(t)
	path := shared.victim(t, variants[0])
	for _, after := range stormDelays {
		for rep := 0; rep < stormReps(t); rep++ {
			t.Run(fmt.Sprintf("%s+%s#%d", name, after, rep), func(t *testing.T) {
				state := filepath.Join(t.TempDir(), "state")
				d := startDaemon(t, filepath.Join(shared.dir, "bin"), state)
				s := startStorm(t, d, path, stormSize)
				s.release()
				time.Sleep(after)
				stop(t, d, state)
				s.finish(t, within)
			})
		}
	}
}

// stormRun is one victim's crash in a storm, as measured.
type stormRun struct {
	FrozenNS int64  `json:"frozen_ns"`
	HeldNS   int64  `json:"held_ns"`
	Hold     string `json:"hold"`
	Complete bool   `json:"complete"`
	Missing  string `json:"missing,omitempty"`
	// StagesNS is each capture stage's duration (while the process was
	// held): where a storm's frozen time goes.
	StagesNS map[string]int64 `json:"stages_ns,omitempty"`
}

// TestStormReports: stormSize victims crash at the same instant; every
// one gets a complete report (the map located and decoded, partners,
// goroutines, nothing cut by the budget), every one exits 2. The frozen
// times (from the BPF event to the release) go to MAPSENTRY_STORM_OUT for
// bench/storm; the suite asserts no timing.
func TestStormReports(t *testing.T) {
	startDaemonCheck(t)
	path := shared.victim(t, variants[0])
	var runs []stormRun
	for rep := 0; rep < stormReps(t); rep++ {
		t.Run(fmt.Sprintf("#%d", rep), func(t *testing.T) {
			// For experiments: MAPSENTRY_STORM_WRAP starts the daemon
			// through a command (e.g. "env GODEBUG=gctrace=1", "chrt -f 1"),
			// MAPSENTRY_STORM_LOG keeps each storm's daemon log (its debug
			// timelines say where each freeze's time went).
			var wrap []string
			if w := os.Getenv("MAPSENTRY_STORM_WRAP"); w != "" {
				wrap = strings.Fields(w)
			}
			d := startDaemonIn(t, wrap, filepath.Join(shared.dir, "bin"), "")
			s := startStorm(t, d, path, stormSize)
			s.release()
			s.finish(t, 30*time.Second)
			if out := os.Getenv("MAPSENTRY_STORM_LOG"); out != "" {
				if err := os.WriteFile(fmt.Sprintf("%s.%d", out, rep), []byte(d.logText()), 0o644); err != nil {
					t.Error(err)
				}
			}
			for _, v := range s.vics {
				if v.cmd.ProcessState == nil || v.cmd.ProcessState.ExitCode() != 2 {
					continue // reported by finish
				}
				r := stormReport(d.crashOf(t, v.pid), printedMap(v.header))
				if !r.Complete {
					t.Errorf("victim %d: report incomplete: %s", v.pid, r.Missing)
				}
				runs = append(runs, r)
			}
		})
	}
	logFrozen(t, runs)
}

// stormReport measures one report and says what it lacks.
func stormReport(cr report.Crash, printed string) stormRun {
	r := stormRun{FrozenNS: cr.Freeze.FrozenNS, HeldNS: cr.Freeze.AllThreadsStoppedNS, Hold: cr.Freeze.Hold,
		StagesNS: map[string]int64{}}
	for _, st := range cr.Capture.Stages {
		r.StagesNS[st.Name] = st.DurationNS
	}
	var miss []string
	if cr.Freeze.Hold != report.HoldPtrace && cr.Freeze.Hold != report.HoldSigstop {
		miss = append(miss, "hold "+cr.Freeze.Hold+": "+cr.Freeze.HoldNote)
	}
	if !cr.Freeze.AllThreadsStopped || !cr.Freeze.Resumed || cr.Freeze.DeadlineHit {
		miss = append(miss, fmt.Sprintf("freeze %+v, errors %q", cr.Freeze, cr.Capture.Errors))
	}
	if len(cr.Capture.Missing)+len(cr.Capture.Cut) > 0 {
		miss = append(miss, fmt.Sprintf("missing %v cut %v", cr.Capture.Missing, cr.Capture.Cut))
	}
	if cr.Map == nil || fmt.Sprintf("%#x", cr.Map.Addr) != printed || cr.Map.Result == nil {
		miss = append(miss, fmt.Sprintf("map %+v (printed %s)", cr.Map, printed))
	}
	if len(cr.Partners) == 0 {
		miss = append(miss, "no partners: "+cr.PartnersNote)
	}
	if len(cr.Goroutines) < 2 {
		miss = append(miss, fmt.Sprintf("%d goroutines", len(cr.Goroutines)))
	}
	r.Complete, r.Missing = len(miss) == 0, strings.Join(miss, "; ")
	return r
}

// logFrozen logs the frozen-time percentiles and writes the runs to
// MAPSENTRY_STORM_OUT.
func logFrozen(t *testing.T, runs []stormRun) {
	if len(runs) == 0 {
		return
	}
	frozen := make([]int64, len(runs))
	holds := map[string]int{}
	for i, r := range runs {
		frozen[i] = r.FrozenNS
		holds[r.Hold]++
	}
	sort.Slice(frozen, func(i, j int) bool { return frozen[i] < frozen[j] })
	pct := func(p float64) time.Duration { return time.Duration(frozen[int(p*float64(len(frozen)-1))]) }
	t.Logf("frozen from the BPF event to release, %d crashes: p50 %s p90 %s p99 %s max %s; holds %v",
		len(frozen), pct(.5), pct(.9), pct(.99), pct(1), holds)
	if out := os.Getenv("MAPSENTRY_STORM_OUT"); out != "" {
		b, _ := json.MarshalIndent(runs, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Error(err)
		}
	}
}
