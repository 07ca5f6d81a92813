package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/probes"
)

// TestStrayFrozenProcessResumedAtStart: a daemon that dies between its
// crash probe's SIGSTOP and writing the frozen record leaves a process
// stopped with no record. Simulated exactly: a bare uprobe stops the
// victim at its crash function, then goes away; the daemon starting next
// must find and resume it, and it dies as it would have.
func TestStrayFrozenProcessResumedAtStart(t *testing.T) {
	startDaemonCheck(t)
	path := shared.victim(t, variants[0])

	vic := stopAtCrash(t, path)
	if s := vic.state(); s != 'T' {
		t.Fatalf("victim state %q before the daemon starts, want T", s)
	}

	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "")
	if code := vic.wait(t, 20*time.Second); code != 2 || !strings.HasPrefix(vic.stderr.String(), "fatal error: concurrent map writes") {
		t.Fatalf("after the daemon started: exit %d, stderr %q", code, firstLine(vic.stderr.String()))
	}
	st, err := d.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.StraysResumed != 1 {
		t.Errorf("strays_resumed %d, want 1", st.StraysResumed)
	}
}

// stopAtCrash starts the victim and stops it with SIGSTOP at its crash
// function, as the probe's fallback hold does, through a bare uprobe that
// is gone afterwards: what a daemon that died at that moment leaves.
func stopAtCrash(t *testing.T, path string) *victim {
	t.Helper()
	bin, err := probes.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	var off uint64
	for _, f := range bin.Funcs {
		if f.Name == "internal/runtime/maps.fatal" {
			off = f.FileOffset
		}
	}
	if off == 0 {
		t.Fatal("internal/runtime/maps.fatal not found")
	}
	vic := startVictim(t, path, "writes", "wait")
	prog := testenv.StopProgram(t)
	ex, err := link.OpenExecutable(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ex.Uprobe("stray", prog, &link.UprobeOptions{Address: off, PID: vic.pid})
	if err != nil {
		t.Fatal(err)
	}
	vic.release()
	waitFor(t, 20*time.Second, "victim stopped at its crash function", func() bool { return vic.state() == 'T' })
	l.Close() // the "dead daemon's" probe is gone
	time.Sleep(200 * time.Millisecond)
	return vic
}
