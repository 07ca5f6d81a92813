package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/report"
)

// quickRetry makes a daemon retry its store every 50-200 ms.
var quickRetry = []string{"MAPSENTRY_STORE_RETRY_INITIAL=50ms", "MAPSENTRY_STORE_RETRY_MAX=200ms"}

func (d *daemon) storeStatus(t *testing.T) apitype.StoreStats {
	t.Helper()
	st, err := d.c.Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st.Store
}

func (d *daemon) waitStore(t *testing.T, what string, cond func(apitype.StoreStats) bool) apitype.StoreStats {
	t.Helper()
	var st apitype.StoreStats
	waitFor(t, 30*time.Second, what, func() bool {
		s, err := d.c.Status(context.Background())
		st = s.Store
		return err == nil && cond(st)
	})
	return st
}

func noneDropped(t *testing.T, st apitype.StoreStats) {
	t.Helper()
	if st.Dropped != (apitype.StoreDropped{}) {
		t.Errorf("store status: dropped %+v, want nothing", st.Dropped)
	}
}

// crashHeld crashes a victim of path under d and checks what the freeze
// must guarantee whatever the store does: the victim dies as without
// mapsentry (exit 2, the runtime's message), released within the budget.
func crashHeld(t *testing.T, d *daemon, path string, budget time.Duration) report.Crash {
	t.Helper()
	vic := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, vic.pid)
	vic.release()
	if code := vic.wait(t, 30*time.Second); code != 2 || !strings.HasPrefix(vic.stderr.String(), "fatal error: concurrent map writes") {
		t.Fatalf("victim: exit %d, stderr %q; want 2 and the runtime's message", code, firstLine(vic.stderr.String()))
	}
	c := d.crashOf(t, vic.pid)
	if !c.Freeze.Resumed || c.Freeze.DeadlineHit || time.Duration(c.Freeze.FrozenNS) >= budget {
		t.Fatalf("freeze: resumed %v, deadline hit %v, frozen %s; want released within the %s budget",
			c.Freeze.Resumed, c.Freeze.DeadlineHit, time.Duration(c.Freeze.FrozenNS), budget)
	}
	if c.Freeze.ExitStatus == nil || *c.Freeze.ExitStatus != 2 {
		t.Fatalf("report exit status %v, want 2", c.Freeze.ExitStatus)
	}
	t.Logf("pid %d frozen %s", vic.pid, time.Duration(c.Freeze.FrozenNS))
	return c
}

// storedDirectly opens the bbolt store of a stopped daemon and returns its
// reports: what is really on disk, not what the daemon serves.
func storedDirectly(t *testing.T, state string) map[string]report.Crash {
	t.Helper()
	s, err := store.Open(state, 10000)
	if err != nil {
		t.Fatalf("open the store the daemon left: %v", err)
	}
	defer s.Close()
	cs, err := s.Crashes(1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]report.Crash{}
	for _, c := range cs {
		out[c.ID] = c
	}
	return out
}

// TestCrashWhileStoreDiskFull: the store's disk (a 1 MiB tmpfs) is full
// when a process crashes. The victim is released within the budget and
// dies with exit 2; the report (and its exit status) waits in the spool,
// served by the API; once space is back it is in the store, once, and
// nothing was dropped.
func TestCrashWhileStoreDiskFull(t *testing.T) {
	startDaemonCheck(t)
	path := shared.victim(t, variants[0])
	state := filepath.Join(t.TempDir(), "state")
	os.Mkdir(state, 0o750)
	testenv.Tmpfs(t, state, 1<<20)
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), state, quickRetry...)
	d.waitStore(t, "store open", func(s apitype.StoreStats) bool { return s.State == "ok" })
	filler := testenv.Fill(t, state)

	c := crashHeld(t, d, path, 2*time.Second)
	// A fresh store's free list holds two 4 KiB pages: a report of three
	// or more needs new ones, which the full disk refuses.
	if b, _ := json.Marshal(c); len(b) <= 8<<10 {
		t.Fatalf("report of %d bytes: too small to need new pages in the store", len(b))
	}
	st := d.waitStore(t, "report and exit status spooled", func(s apitype.StoreStats) bool {
		return s.State == "degraded" && s.Spooled == 1 && s.Queued == 0
	})
	if !strings.Contains(st.Error, "no space left on device") {
		t.Errorf("store error %q, want ENOSPC", st.Error)
	}

	os.Remove(filler)
	st = d.waitStore(t, "spool moved into the store", func(s apitype.StoreStats) bool {
		return s.State == "ok" && s.Spooled == 0 && s.Memory == 0 && s.DeferredUpdates == 0
	})
	if st.Stored != 1 || st.MovedIn != 1 || st.StoreErrors == 0 {
		t.Errorf("store counters %+v: want 1 stored, 1 moved in, store errors seen", st)
	}
	noneDropped(t, st)
	d.stop()
	onDisk := storedDirectly(t, state)
	got, ok := onDisk[c.ID]
	if len(onDisk) != 1 || !ok || got.Freeze.ExitStatus == nil || *got.Freeze.ExitStatus != 2 || got.Map == nil {
		t.Fatalf("store holds %d reports (want the one, with exit status 2 and its map): %+v", len(onDisk), got.Freeze)
	}
}

// TestReadOnlyStateDir: a store that cannot be opened (read-only state
// directory) stops nothing. A daemon killed while holding a process lets
// it go (the kernel ends a ptrace hold), even a SIGSTOP hold, which it
// recorded until ptrace took it over; one killed before the takeover
// leaves the process stopped with its record, and the next daemon, on the
// same broken store, resumes it from the record and runs degraded, saying
// so; a crash meanwhile is captured within the budget and spooled; once
// the directory is writable the report is in the store.
func TestReadOnlyStateDir(t *testing.T) {
	startDaemonCheck(t)
	path := shared.victim(t, variants[0])
	scope := filepath.Join(shared.dir, "bin")
	state := filepath.Join(t.TempDir(), "state")
	os.Mkdir(state, 0o750)
	writable := testenv.ReadOnly(t, state)

	hold := append([]string{"MAPSENTRY_CAPTURE_DEBUG_HOLD=20s", "MAPSENTRY_FREEZE_MAX=60s", "MAPSENTRY_FREEZE_HOLD=sigstop"}, quickRetry...)
	d1 := startDaemon(t, scope, state, hold...)
	st := d1.storeStatus(t)
	if st.State != "degraded" || !strings.Contains(st.Error, "read-only file system") {
		t.Fatalf("store status on a read-only state dir: %+v, want degraded, EROFS", st)
	}
	left := startVictim(t, path, "writes", "wait")
	d1.waitAttached(t, left.pid)
	leftID, err := procmem.IdentityOf(left.pid)
	if err != nil {
		t.Fatal(err)
	}
	left.release()
	// Killed while it holds it, once ptrace has taken over (every thread
	// traced, the group stop continued, the record of the probe's SIGSTOP
	// dropped — it was written before the seize, so traced threads with
	// no record mean the takeover is done): the kernel lets it go.
	record := filepath.Join(d1.run, "frozen", fmt.Sprintf("%d.json", left.pid))
	waitFor(t, 20*time.Second, "victim held by ptrace alone", func() bool {
		_, err := os.Stat(record)
		return left.allThreads('t') && os.IsNotExist(err)
	})
	d1.kill()
	if code := left.wait(t, 5*time.Second); code != 2 {
		t.Fatalf("held process after the daemon's SIGKILL: exit %d, want 2", code)
	}
	// Killed in the milliseconds before the takeover: stopped, recorded.
	stopped := stopAtCrash(t, path)
	id, err := procmem.IdentityOf(stopped.pid)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := store.OpenFrozenRecords(filepath.Join(d1.run, "frozen"))
	if err := recs.Add(store.Frozen{PID: id.PID, StartTime: id.StartTime, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// And a stale record, of the first victim, which is gone.
	if err := recs.Add(store.Frozen{PID: leftID.PID, StartTime: leftID.StartTime, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}

	d2 := startDaemon(t, scope, state, quickRetry...)
	if code := stopped.wait(t, 20*time.Second); code != 2 {
		t.Fatalf("leftover after the restart on a broken store: exit %d, want 2", code)
	}
	status, err := d2.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Resumed from its record, not by the sweep of unrecorded strays; the
	// stale record names a process that is gone: not counted as resumed.
	if status.LeftoversResumed != 1 || status.StraysResumed != 0 || status.Store.State != "degraded" {
		t.Fatalf("after restart: leftovers_resumed %d, strays_resumed %d, store %q; want 1, 0, degraded",
			status.LeftoversResumed, status.StraysResumed, status.Store.State)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Errorf("the stale record of a gone process is still there: %v", err)
	}
	out, _ := cli(t, 0, 0, nil, "status", "--socket", d2.socket)
	if !strings.Contains(out, "degraded") || !strings.Contains(out, "read-only file system") {
		t.Errorf("mapsentry status does not say the store is degraded:\n%s", out)
	}

	// The leftover, resumed, runs on from maps.fatal into the runtime's
	// other fatal functions: when d2's probes are in by then, d2 captures
	// that crash too — its only report, d1 having been killed. Count it.
	leftoverCaptured := func() int {
		if strings.Contains(d2.logText(), fmt.Sprintf(`msg="crash captured" component=capture pid=%d `, stopped.pid)) {
			return 1
		}
		return 0
	}
	c := crashHeld(t, d2, path, 2*time.Second)
	d2.waitStore(t, "reports spooled", func(s apitype.StoreStats) bool {
		return s.Spooled == 1+leftoverCaptured() && s.Queued == 0
	})
	writable()
	st = d2.waitStore(t, "store opened, spool moved in", func(s apitype.StoreStats) bool {
		return s.State == "ok" && s.Spooled == 0 && s.Memory == 0
	})
	if want := uint64(1 + leftoverCaptured()); st.Stored != want || st.MovedIn != want {
		t.Errorf("store counters %+v, want %d stored and moved in", st, want)
	}
	noneDropped(t, st)
	d2.stop()
	if got, ok := storedDirectly(t, state)[c.ID]; !ok || got.Freeze.ExitStatus == nil {
		t.Fatalf("report %s not in the store with its exit status", c.ID)
	}
}

// TestOneDaemonPerInstance: a second daemon of the same instance, or on
// the same state directory, refuses to start and names the first one's
// PID; one with another instance name and its own directories runs beside
// it.
func TestOneDaemonPerInstance(t *testing.T) {
	startDaemonCheck(t)
	scope := filepath.Join(t.TempDir(), "bin")
	os.Mkdir(scope, 0o755)
	first := startDaemon(t, scope, "")
	pid := first.cmd.Process.Pid

	refused := func(d *daemon, want ...string) {
		t.Helper()
		// Not d.launch: it waits for the socket, and this daemon must
		// exit instead.
		w := &syncWriter{w: d.log}
		d.cmd.Stdout, d.cmd.Stderr = w, w
		if err := d.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { d.cmd.Wait(); close(d.done) }()
		t.Cleanup(d.stop)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("a second daemon runs beside pid %d:\n%s", pid, d.logText())
		}
		if code := d.cmd.ProcessState.ExitCode(); code == 0 {
			t.Errorf("refused daemon exited 0")
		}
		msg := d.logText()
		for _, w := range append(want, fmt.Sprintf("pid %d", pid)) {
			if !strings.Contains(msg, w) {
				t.Errorf("refusal does not say %q:\n%s", w, msg)
			}
		}
		t.Logf("refused: %s", strings.TrimSpace(msg))
	}
	sameInstance := newDaemon(t, scope, "", "MAPSENTRY_INSTANCE="+testInstance(first.state))
	refused(sameInstance, `instance "`+testInstance(first.state)+`"`, first.state)
	sameState := newDaemon(t, scope, first.state, "MAPSENTRY_INSTANCE=test-other-"+fmt.Sprint(os.Getpid()))
	refused(sameState, "directory "+first.state)

	other := startDaemon(t, scope, "")
	for _, d := range []*daemon{first, other} {
		d.waitStore(t, "store open in the daemon on "+d.state, func(s apitype.StoreStats) bool { return s.State == "ok" })
	}
	if _, err := first.c.Status(context.Background()); err != nil {
		t.Fatalf("the first daemon stopped answering: %v", err)
	}
}
