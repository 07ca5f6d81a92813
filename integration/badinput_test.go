package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

// A process killed from outside while the daemon holds it: the hold ends
// at once (its parent sees the death without waiting for the budget), the
// report says how it died and that it was not resumed, nothing else breaks.
func TestProcessKilledWhileFrozen(t *testing.T) {
	startDaemonCheck(t)
	path := shared.victim(t, variants[0])
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "",
		"MAPSENTRY_CAPTURE_DEBUG_HOLD=2s", "MAPSENTRY_FREEZE_MAX=20s")
	vic := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, vic.pid)
	vic.release()
	waitFor(t, 20*time.Second, "victim held", func() bool { return vic.allThreads('t') })
	syscall.Kill(vic.pid, syscall.SIGKILL)
	vic.wait(t, time.Second) // not the 20 s budget, nor the 2 s debug hold

	var cr report.Crash
	waitFor(t, 20*time.Second, "report of the killed process", func() bool {
		cs, err := d.c.Crashes(context.Background(), 10)
		if err != nil || len(cs) == 0 || cs[0].Process.PID != vic.pid || cs[0].Freeze.ExitSignal == nil {
			return false
		}
		cr = cs[0]
		return cs[0].Fatal.Message == "concurrent map writes"
	})
	if sig := *cr.Freeze.ExitSignal; sig != int(syscall.SIGKILL) {
		t.Errorf("exit signal %d, want SIGKILL", sig)
	}
	if cr.Freeze.Resumed || cr.Freeze.Released != "gone" {
		t.Errorf("freeze %+v: a process killed while held was not resumed", cr.Freeze)
	}
	// The daemon is healthy and captures the next crash normally.
	v2 := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, v2.pid)
	v2.release()
	if code := v2.wait(t, 30*time.Second); code != 2 {
		t.Fatalf("next victim exit %d, want 2", code)
	}
	d.crashOf(t, v2.pid)
}

// A full ring buffer loses events: counted in status, logged with the
// reason, and the daemon keeps working.
func TestFullRingBuffer(t *testing.T) {
	startDaemonCheck(t)
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_CAPTURE_RING_BUFFER_BYTES=4096")
	// Bursts of exec events: 4 KiB holds three or four records.
	lost := func() uint64 {
		st, err := d.c.Status(context.Background())
		if err != nil {
			return 0
		}
		return st.Kernel.ExecLost
	}
	deadline := time.Now().Add(30 * time.Second)
	for lost() == 0 && time.Now().Before(deadline) {
		var wg sync.WaitGroup
		for i := 0; i < 64; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); exec.Command("/bin/true").Run() }()
		}
		wg.Wait()
	}
	if lost() == 0 {
		t.Fatal("no exec event lost with a 4 KiB ring buffer after 30 s of bursts")
	}
	waitFor(t, 10*time.Second, "a log line naming the full ring buffer", func() bool {
		return strings.Contains(d.logText(), "event ring buffer full")
	})
	// Still captures a crash once the burst is over.
	path := shared.victim(t, variants[0])
	vic := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, vic.pid)
	vic.release()
	if code := vic.wait(t, 30*time.Second); code != 2 {
		t.Fatalf("victim exit %d, want 2", code)
	}
	d.crashOf(t, vic.pid)
}
