package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/internal/tracehold"
)

// child starts a process of our own to stop and resume: signalling one's
// own child needs no privilege.
func child(t *testing.T) procmem.Identity {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		testenv.Unavailable(t, fmt.Sprintf("no sleep(1): %v", err))
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	id, err := procmem.IdentityOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func state(t *testing.T, id procmem.Identity) byte {
	t.Helper()
	st, err := procmem.ReadStat("/proc/" + itoa(id.PID) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	return st.State
}

func itoa(n int) string { return strconv.Itoa(n) }

func waitState(t *testing.T, id procmem.Identity, want func(byte) bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if want(state(t, id)) {
			return
		}
	}
	t.Fatalf("pid %d: state %q, want %s", id.PID, state(t, id), what)
}

func stopped(s byte) bool { return s == 'T' }
func running(s byte) bool { return s == 'S' || s == 'R' }

func TestFreezeResumesAtDeadline(t *testing.T) {
	id := child(t)
	var frozen, thawed int
	h, err := freeze(context.Background(), id, 200*time.Millisecond, 100*time.Millisecond, Hooks{
		Frozen: func(procmem.Identity, time.Time) error { frozen++; return nil },
		Thawed: func(procmem.Identity) error { thawed++; return nil },
	}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if state(t, id) != 'T' {
		t.Fatalf("not stopped: %q", state(t, id))
	}
	waitState(t, id, running, "running after freeze.max")
	<-h.done
	h.resume("done") // too late: the deadline decided
	f := h.result()
	if !f.DeadlineHit || f.ResumedBy != "deadline" || !f.Resumed || frozen != 1 || thawed != 1 {
		t.Fatalf("freeze %+v, frozen records %d/%d", f, frozen, thawed)
	}
}

func TestFreezeResumesOnCancel(t *testing.T) {
	id := child(t)
	ctx, cancel := context.WithCancel(context.Background())
	h, err := freeze(ctx, id, time.Minute, 100*time.Millisecond, Hooks{}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer h.resume("error")
	if state(t, id) != 'T' {
		t.Fatalf("not stopped: %q", state(t, id))
	}
	cancel()
	waitState(t, id, running, "running after cancel")
	if f := h.result(); f.ResumedBy != "canceled" || !f.Resumed {
		t.Fatalf("freeze %+v", f)
	}
}

func TestFreezeLeavesForeignStopAlone(t *testing.T) {
	id := child(t)
	if err := syscall.Kill(id.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, id, stopped, "stopped by the test")
	h, err := freeze(context.Background(), id, time.Minute, 100*time.Millisecond, Hooks{}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	h.resume("done")
	if f := h.result(); !f.AlreadyStopped || f.Resumed {
		t.Fatalf("freeze %+v", f)
	}
	time.Sleep(20 * time.Millisecond)
	if s := state(t, id); s != 'T' {
		t.Fatalf("a stop that was not ours was undone: state %q", s)
	}
}

func TestFreezeRefusesBusyAndLeavesCrashCaptureItsProcess(t *testing.T) {
	id := child(t)
	busy := true
	hooks := Hooks{Busy: func(procmem.Identity) bool { return busy }}
	if _, err := freeze(context.Background(), id, time.Minute, 100*time.Millisecond, hooks, slog.Default()); !errors.Is(err, ErrBusy) {
		t.Fatalf("busy process: err %v, want ErrBusy", err)
	}
	if s := state(t, id); s == 'T' {
		t.Fatal("a busy process was stopped")
	}
	// A crash capture takes the process over while we hold it: it holds
	// the process through ptrace and continues only a SIGSTOP of the
	// probe's, so ours is ended here, or the process stays stopped after
	// the capture's release.
	busy = false
	h, err := freeze(context.Background(), id, time.Minute, 100*time.Millisecond, hooks, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	busy = true
	// The crash path's hold, as capture starts it for a stop the probe
	// did not send: it does not continue our SIGSTOP.
	th := tracehold.Start(id, tracehold.Options{Continue: func() bool { return false }, StopWait: time.Second})
	defer th.Release("test end")
	if _, err := th.State(); err != nil {
		t.Fatalf("ptrace hold: %v", err)
	}
	h.resume("done")
	if f := h.result(); f.ResumedBy != "crash_capture" || f.Resumed {
		t.Fatalf("freeze %+v", f)
	}
	// Our SIGCONT ends the group stop, not the ptrace hold.
	time.Sleep(20 * time.Millisecond)
	if s := state(t, id); s != 't' {
		t.Fatalf("state %q while the crash capture holds it, want t (ptrace-stop)", s)
	}
	if rel := th.Release("capture done"); rel.Gone || rel.Detached == 0 {
		t.Fatalf("release of the ptrace hold: %+v", rel)
	}
	// Detached, a thread passes through R before a group stop still in
	// effect stops it again: look once that has had time to happen.
	time.Sleep(50 * time.Millisecond)
	waitState(t, id, running, "running after the capture's release: our SIGSTOP must not outlive the live hold")
}

func TestInspectorRefusesItselfAndBadRequests(t *testing.T) {
	in := New(Config{}, Hooks{}, slog.Default())
	for _, req := range []DecodeRequest{{PID: 0, Addr: 8}, {PID: 1, Addr: 0}, {PID: 1, Addr: 7}} {
		if _, err := in.Decode(context.Background(), req); !errors.Is(err, ErrRefused) {
			t.Errorf("%+v: err %v, want ErrRefused", req, err)
		}
	}
	if _, err := in.Dump(context.Background(), DumpRequest{PID: syscall.Getpid()}); !errors.Is(err, ErrRefused) {
		t.Errorf("dump of itself: err %v, want ErrRefused", err)
	}
}

func TestStopResumesHeldProcesses(t *testing.T) {
	id := child(t)
	in := New(Config{FreezeMax: time.Minute}, Hooks{}, slog.Default())
	h, err := in.freeze(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if state(t, id) != 'T' {
		t.Fatalf("not stopped: %q", state(t, id))
	}
	in.Stop()
	waitState(t, id, running, "running after Stop")
	if f := h.result(); f.ResumedBy != "shutdown" || !f.Resumed {
		t.Fatalf("freeze %+v", f)
	}
	if _, err := in.Dump(context.Background(), DumpRequest{PID: id.PID}); !errors.Is(err, ErrBusy) {
		t.Fatalf("dump after Stop: err %v, want ErrBusy", err)
	}
}
