package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// holdRun is one crash held one way, as measured.
type holdRun struct {
	Mode     string `json:"mode"`
	Hold     string `json:"hold"`
	FrozenNS int64  `json:"frozen_ns"`
	HeldNS   int64  `json:"held_ns"`
	// Printed is what the runtime had written to stderr when every thread
	// was held: the hold came too late for those bytes.
	Printed    int  `json:"printed_before_hold"`
	MapOK      bool `json:"map_ok"`
	PartnerOK  bool `json:"partner_ok"`
	Goroutines int  `json:"goroutines"`
	PrintedG   bool `json:"printed_goroutine_dumped"`
}

// holdModes are the holds compared: the chosen one, SIGSTOP, and a
// crashing thread that gives up waiting at once and runs on until seized
// (what a job-control parent gets when no probe may wait).
var holdModes = []struct{ name, hold, probeWait string }{
	{"ptrace", "ptrace", "250ms"},
	{"sigstop", "sigstop", "250ms"},
	{"late", "ptrace", "1ms"},
}

// TestHoldsCompared crashes the victim under each hold and measures what
// docs/freeze.md compares: time to hold, what the runtime printed before
// every thread was held, and whether the map, the racing writer and the
// printed goroutine are in the report. The ptrace and SIGSTOP holds must
// catch the crashing thread before it prints a byte. MAPSENTRY_HOLDS_N
// crashes per mode (3 in the suite; bench/storm runs more), written to
// MAPSENTRY_HOLDS_OUT.
func TestHoldsCompared(t *testing.T) {
	startDaemonCheck(t)
	n := envCount(t, "MAPSENTRY_HOLDS_N", 3)
	path := shared.victim(t, variants[0])
	var runs []holdRun
	for _, m := range holdModes {
		t.Run(m.name, func(t *testing.T) {
			d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_FREEZE_HOLD="+m.hold,
				"MAPSENTRY_FREEZE_PROBE_WAIT="+m.probeWait, "MAPSENTRY_CAPTURE_DEBUG_HOLD=300ms")
			for i := 0; i < n; i++ {
				if r, ok := d.heldCrash(t, path, m.name); ok {
					runs = append(runs, r)
				}
			}
		})
	}
	summarizeHolds(t, runs)
	if out := os.Getenv("MAPSENTRY_HOLDS_OUT"); out != "" {
		b, _ := json.MarshalIndent(runs, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// heldCrash runs one victim to its crash under d and measures it.
func (d *daemon) heldCrash(t *testing.T, path, mode string) (holdRun, bool) {
	t.Helper()
	vic := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, vic.pid)
	vic.release()
	printed := -1
	// capture.debug_hold keeps it held 300 ms after the copy: once every
	// thread is in its ptrace-stop nothing more is written; the pause lets
	// the pipe deliver what was.
	waitFor(t, 20*time.Second, "victim held or gone", func() bool {
		if vic.allThreads('t') {
			time.Sleep(50 * time.Millisecond)
			printed = vic.stderrLen()
			return true
		}
		return vic.state() == 0
	})
	code, livelock := vic.waitRace(t, 60*time.Second)
	if livelock != "" {
		t.Logf("victim livelocked, not counted: %s", livelock)
		return holdRun{}, false
	}
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	cr := d.crashOf(t, vic.pid)
	g, _ := printedGoroutine(vic.stderr.String())
	r := holdRun{Mode: mode, Hold: cr.Freeze.Hold, FrozenNS: cr.Freeze.FrozenNS, HeldNS: cr.Freeze.AllThreadsStoppedNS,
		Printed: printed, MapOK: cr.Map != nil && fmt.Sprintf("%#x", cr.Map.Addr) == printedMap(vic.header),
		PartnerOK: hasPartner(cr, "main.writer"), Goroutines: len(cr.Goroutines)}
	for _, gr := range cr.Goroutines {
		r.PrintedG = r.PrintedG || gr.ID == g
	}
	if mode != "late" && (printed != 0 || cr.Freeze.Hold != mode) {
		t.Errorf("%s: hold %q, %d bytes printed before every thread was held (want %s, 0)", mode, cr.Freeze.Hold, printed, mode)
	}
	return r, true
}

// summarizeHolds logs one line per mode: the medians and the rates.
func summarizeHolds(t *testing.T, runs []holdRun) {
	for _, m := range holdModes {
		var held []time.Duration
		var printed, mapOK, partnerOK, gOK, n int
		for _, r := range runs {
			if r.Mode != m.name {
				continue
			}
			n++
			held = append(held, time.Duration(r.HeldNS))
			if r.Printed != 0 {
				printed++
			}
			mapOK += b2i(r.MapOK)
			partnerOK += b2i(r.PartnerOK)
			gOK += b2i(r.PrintedG)
		}
		if n == 0 {
			continue
		}
		t.Logf("%-8s %d crashes: held (event to every thread stopped) median %s; printed before the hold in %d; "+
			"map %d, writer named %d, printed goroutine dumped %d", m.name, n, median(held), printed, mapOK, partnerOK, gOK)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestSecondCrashingThreadWaitsToo: two threads of one process reach the
// runtime's fatal path at once, the process in a group of its own (its
// parent could see a SIGSTOP) and one waiter slot on the host. The first
// thread takes the slot; the second must wait too, without one: running
// on, it would print the fatal error and end the process the first one
// waits in. Each round: once every thread is held, the runtime has printed
// nothing; the report says ptrace; the victim exits 2.
func TestSecondCrashingThreadWaitsToo(t *testing.T) {
	startDaemonCheck(t)
	path := shared.victim(t, variants[0])
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_FREEZE_PROBE_WAITERS=1",
		"MAPSENTRY_CAPTURE_DEBUG_HOLD=300ms")
	twice := 0
	for i := 0; i < 5; i++ {
		vic := startVictimWith(t, victimOpts{ownGroup: true}, path, "unlocks", "wait")
		d.waitAttached(t, vic.pid)
		vic.release()
		printed := -1
		waitFor(t, 20*time.Second, "victim held or gone", func() bool {
			if vic.allThreads('t') {
				time.Sleep(50 * time.Millisecond) // let the pipe deliver what was written
				printed = vic.stderrLen()
				return true
			}
			return vic.state() == 0
		})
		if code := vic.wait(t, 20*time.Second); code != 2 {
			t.Fatalf("round %d: victim exit %d, want 2", i, code)
		}
		cr := d.crashOf(t, vic.pid)
		if printed != 0 || cr.Freeze.Hold != "ptrace" || !cr.Freeze.Resumed {
			t.Errorf("round %d: %d bytes printed before the hold (-1: never held), hold %q (%s), resumed %v; want 0, ptrace; errors %q",
				i, printed, cr.Freeze.Hold, cr.Freeze.HoldNote, cr.Freeze.Resumed, cr.Capture.Errors)
		}
		if len(cr.Fatal.Events) >= 2 {
			twice++
		}
	}
	t.Logf("both threads reached the probe in %d of 5 rounds", twice)
}

// TestOrphanReleasedWithoutSession: a crash whose event no session ever
// reads (the event loop wedged by the test-only fault switch) is held by
// the probe's SIGSTOP and released by the orphan check, past twice the
// freeze budget, within a pulse: the victim dies of its own fatal error,
// exit 2. Twice, with a listing that found nothing in between: the daemon
// learns of the second stop state from the mapped stop generation, not
// from listing the states every second.
func TestOrphanReleasedWithoutSession(t *testing.T) {
	path := shared.victim(t, variants[0])
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_FREEZE_HOLD=sigstop",
		"MAPSENTRY_FREEZE_MAX=200ms", "MAPSENTRY_CAPTURE_DEBUG_BLOCK_EVENTS_AFTER=1s")
	vics := []*victim{startVictim(t, path, "unlocks", "wait"), startVictim(t, path, "unlocks", "wait")}
	for _, v := range vics {
		d.waitAttached(t, v.pid)
	}
	waitFor(t, 10*time.Second, "event loop blocked", func() bool {
		return strings.Contains(d.logText(), "the event loop blocks for good now")
	})
	for i, v := range vics {
		time.Sleep(4500 * time.Millisecond) // pulses (every 2 s) that find no stop state
		v.release()
		stopped := false
		waitFor(t, 10*time.Second, "victim stopped by the probe or gone", func() bool {
			st := v.state()
			stopped = st == 'T'
			return stopped || st == 0
		})
		if !stopped {
			t.Errorf("victim %d: never stopped (sigstop hold, live daemon)", i)
		}
		if code := v.wait(t, 10*time.Second); code != 2 {
			t.Errorf("victim %d: exit %d, want 2 (stderr %q)", i, code, firstLine(v.stderr.String()))
		}
		if n := strings.Count(d.logText(), "process held without a capture session"); n != i+1 {
			t.Errorf("after victim %d: %d orphans released, want %d", i, n, i+1)
		}
	}
}
