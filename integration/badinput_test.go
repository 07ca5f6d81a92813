package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
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

// Crash events have a ring buffer of their own: an exec ring overrun by
// the host's execs loses exec events (counted by kind, logged with the key
// to raise) and never a crash or exit event. The exec ring is the
// smallest there is (4 KiB, ~18 records) and the storm execs files never
// seen (copies of /bin/true: execs of known files send nothing); a crash
// is captured during the storm with its exit status, and the crash-side
// loss counters stay zero.
func TestFullRingBuffer(t *testing.T) {
	startDaemonCheck(t)
	// Without the gate, new files' execs are not serialised behind their
	// inspection: the storm outruns the reader.
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_DISCOVERY_EXEC_RING_BUFFER_BYTES=4096",
		"MAPSENTRY_DISCOVERY_EXEC_GATE_ENABLED=false")
	status := func() *apitype.Status {
		st, err := d.c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	src, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	storm := func(round int) {
		var wg sync.WaitGroup
		for i := 0; i < 64; i++ {
			p := filepath.Join(dir, fmt.Sprintf("true%d-%d", round, i))
			if err := os.WriteFile(p, src, 0o755); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() { defer wg.Done(); exec.Command(p).Run() }()
		}
		wg.Wait()
	}
	path := shared.victim(t, variants[0])
	vic := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, vic.pid)
	stop := make(chan struct{})
	stormDone := make(chan struct{})
	go func() {
		defer close(stormDone)
		for round := 0; ; round++ {
			select {
			case <-stop:
				return
			default:
			}
			storm(round)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for status().Kernel.ExecLost == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// The crash, while the exec ring overflows.
	vic.release()
	code := vic.wait(t, 30*time.Second)
	close(stop)
	<-stormDone
	if code != 2 {
		t.Fatalf("victim exit %d, want 2", code)
	}
	cr := d.crashOf(t, vic.pid) // resumed, with its exit status: the exit event arrived
	if cr.Fatal.Message != "concurrent map writes" {
		t.Errorf("fatal message %q", cr.Fatal.Message)
	}
	// The contract: whatever the exec traffic, no crash or exit event lost.
	k := status().Kernel
	if k.RingbufFull != 0 || k.ExitLost != 0 {
		t.Errorf("crash-side events lost to exec traffic: %+v", k)
	}
	if k.ExecLost == 0 {
		// The reader kept up: the counting of exec losses is not shown
		// by this run (the crash side is).
		t.Logf("no exec event lost with a 4 KiB exec ring (%d exec records read)", status().Events.ExecRead)
		return
	}
	t.Logf("%d exec events lost", k.ExecLost)
	waitFor(t, 10*time.Second, "a log line naming the full exec ring", func() bool {
		return strings.Contains(d.logText(), "exec ring buffer full") &&
			strings.Contains(d.logText(), "discovery.exec_ring_buffer_bytes")
	})
}
