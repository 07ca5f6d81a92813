package tracehold

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

// The test binary plays the other processes: a busy multi-threaded
// target, and a tracer that holds a target and waits to be killed.
const roleEnv = "MAPSENTRY_TRACEHOLD_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "spinner":
		spin()
	case "tracer":
		traceAndWait()
	}
	os.Exit(m.Run())
}

// spin keeps four threads busy forever.
func spin() {
	runtime.GOMAXPROCS(4)
	for i := 0; i < 4; i++ {
		go func() {
			runtime.LockOSThread()
			for n := 0; ; n++ {
				_ = n
			}
		}()
	}
	select {}
}

// traceAndWait holds the process named by MAPSENTRY_TRACEHOLD_PID, says
// "held" and blocks until killed.
func traceAndWait() {
	pid, _ := strconv.Atoi(os.Getenv("MAPSENTRY_TRACEHOLD_PID"))
	id, err := procmem.IdentityOf(pid)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	h := Start(id, Options{})
	if _, err := h.State(); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("held")
	select {}
}

// orphan starts the test binary in role, detached from this process (a
// child's ptrace-stops would be reported to this process's own wait
// calls), and returns its identity. It is killed at the end of t.
func orphan(t *testing.T, role string, env ...string) (procmem.Identity, *bufio.Reader) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `"$0" -test.run=none & echo $!`, exe)
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	// A pipe of our own: exec.Cmd would close its read end once sh exits,
	// while the orphan still writes to it.
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { out.Close() })
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("start %s: %v", role, err)
	}
	go cmd.Wait()
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("start %s: %q", role, line)
	}
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGCONT)
		syscall.Kill(pid, syscall.SIGKILL)
	})
	var id procmem.Identity
	waitUntil(t, 10*time.Second, role+" running", func() bool {
		id, err = procmem.IdentityOf(pid)
		th, _ := procmem.ThreadStates(pid)
		return err == nil && (role != "spinner" || len(th) >= 5)
	})
	return id, r
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
	}
}

// cpuTicks is utime+stime of pid.
func cpuTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

func states(t *testing.T, pid int) string {
	t.Helper()
	st, err := procmem.ThreadStates(pid)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range st {
		b.WriteByte(s)
	}
	return b.String()
}

// A held process runs no instruction until released, every thread in a
// ptrace-stop ('t', not the job-control 'T'), its registers read; the
// release lets every thread run again.
func TestHoldAndRelease(t *testing.T) {
	testenv.RequirePrivileged(t)
	id, _ := orphan(t, "spinner")
	seized := false
	w := NewWakeup()
	defer w.Stop()
	h := Start(id, Options{OnSeized: func() { seized = true }, Wakeup: w})
	st, err := h.State()
	if err != nil {
		h.Release("test")
		t.Fatal(err)
	}
	if !seized || !st.AllStopped || len(st.Threads) < 5 || st.StoppedNS < st.SeizedNS {
		t.Errorf("held: seized=%v %+v", seized, st)
	}
	for _, th := range st.Threads {
		if !th.Stopped || th.RegsErr != nil || th.Regs.PC() == 0 {
			t.Errorf("%v: registers %v", th, th.RegsErr)
		}
	}
	if s := states(t, id.PID); strings.Trim(s, "t") != "" {
		t.Errorf("thread states %q while held, want all t", s)
	}
	before := cpuTicks(t, id.PID)
	time.Sleep(200 * time.Millisecond)
	if after := cpuTicks(t, id.PID); after != before {
		t.Errorf("held process used CPU: %d -> %d ticks", before, after)
	}
	rel := h.Release("done")
	if rel.Why != "done" || rel.Gone || rel.Err != nil || rel.ByExit || rel.Detached != len(st.Threads) || rel.AtNS < st.StoppedNS {
		t.Errorf("release: %+v", rel)
	}
	waitUntil(t, 5*time.Second, "released process running", func() bool {
		return strings.ContainsRune(states(t, id.PID), 'R') && cpuTicks(t, id.PID) > before
	})
}

// The deadline releases a process whatever its holder does.
func TestDeadlineReleases(t *testing.T) {
	testenv.RequirePrivileged(t)
	id, _ := orphan(t, "spinner")
	h := Start(id, Options{Deadline: time.Now().Add(100 * time.Millisecond)})
	if _, err := h.State(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not released at the deadline")
	}
	if r := h.Result(); r.Why != "deadline" || r.Detached == 0 {
		t.Errorf("released %+v, want by the deadline", r)
	}
	if r := h.Release("late"); r.Why != "deadline" {
		t.Errorf("a later Release changed the reason: %+v", r)
	}
	waitUntil(t, 5*time.Second, "running after the deadline", func() bool {
		return !strings.Contains(states(t, id.PID), "t")
	})
}

// A process a SIGSTOP of ours stopped (the probe's fallback) ends up held
// by ptrace alone: group stop ended, so that a dead holder cannot leave it
// stopped; release lets it run.
func TestContinueAfterSigstop(t *testing.T) {
	testenv.RequirePrivileged(t)
	id, _ := orphan(t, "spinner")
	if err := id.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "group stop", func() bool { return strings.Trim(states(t, id.PID), "T") == "" })
	h := Start(id, Options{Continue: func() bool { return true }})
	st, err := h.State()
	if err != nil {
		h.Release("test")
		t.Fatal(err)
	}
	if !st.Continued || !st.AllStopped {
		t.Errorf("held %+v, want continued and all stopped", st)
	}
	if s := states(t, id.PID); strings.Trim(s, "t") != "" {
		t.Errorf("thread states %q, want all t (ptrace only)", s)
	}
	h.Release("done")
	waitUntil(t, 5*time.Second, "running after release", func() bool {
		s := states(t, id.PID)
		return !strings.ContainsAny(s, "tT")
	})
}

// When the holder dies, the kernel lets the process go: no rescuer needed.
// A process traced by someone else cannot be held.
func TestHolderDeathReleases(t *testing.T) {
	testenv.RequirePrivileged(t)
	id, _ := orphan(t, "spinner")
	tr, out := orphan(t, "tracer", "MAPSENTRY_TRACEHOLD_PID="+strconv.Itoa(id.PID))
	if line, err := out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "held" {
		t.Fatalf("tracer said %q, %v", line, err)
	}
	if s := states(t, id.PID); strings.Trim(s, "t") != "" {
		t.Fatalf("thread states %q under the tracer, want all t", s)
	}
	h := Start(id, Options{})
	if _, err := h.State(); !errors.Is(err, ErrNotHeld) {
		t.Errorf("hold of a traced process: %v, want ErrNotHeld", err)
	}
	h.Release("test")
	if err := tr.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "running after the tracer died", func() bool {
		s := states(t, id.PID)
		return !strings.ContainsAny(s, "tT")
	})
}

// A process killed while held is let go at once, reported gone: its parent
// must not wait for the holder's release to see the death.
func TestKilledWhileHeld(t *testing.T) {
	testenv.RequirePrivileged(t)
	id, _ := orphan(t, "spinner")
	w := NewWakeup()
	defer w.Stop()
	h := Start(id, Options{Wakeup: w})
	if _, err := h.State(); err != nil {
		h.Release("test")
		t.Fatal(err)
	}
	if err := syscall.Kill(id.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("hold of a killed process not ended")
	}
	if r := h.Result(); r.Why != "exited" || !r.Gone || r.Detached != 0 {
		t.Errorf("released %+v, want exited, gone, nothing detached", r)
	}
}

// nices lists the nice value of every thread of pid.
func nices(t *testing.T, pid int) map[int]int {
	t.Helper()
	tids, err := tasks(pid)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	for _, tid := range tids {
		raw, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
		if err != nil {
			t.Fatal(err)
		}
		out[tid] = 20 - raw
	}
	return out
}

// A boosted thread runs at the boost until it stops, and every thread has
// its own nice value back while still held and after the release.
func TestBoostRestoresOwnNice(t *testing.T) {
	testenv.RequirePrivileged(t)
	id, _ := orphan(t, "spinner")
	// Pass after pass: the runtime may still be starting threads, and one
	// cloned from a thread not yet at 7 starts at 0.
	for pass, done := 0, false; !done; pass++ {
		if pass == 100 {
			t.Fatal("the spinner's threads never settled at nice 7")
		}
		done = true
		for tid, n := range nices(t, id.PID) {
			if n == 7 {
				continue
			}
			done = false
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, 7); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The mechanism itself, on one thread: raised, then put back.
	th := &Thread{TID: id.PID}
	if err := th.boost(-15); err != nil {
		t.Fatal(err)
	}
	if n := nices(t, id.PID)[id.PID]; n != -15 || !th.boosted {
		t.Fatalf("boosted thread at nice %d, want -15", n)
	}
	th.unboost()
	if n := nices(t, id.PID)[id.PID]; n != 7 {
		t.Fatalf("unboosted thread at nice %d, want its own 7", n)
	}
	// Through a hold: stopped threads have theirs back before release.
	w := NewWakeup()
	defer w.Stop()
	h := Start(id, Options{Wakeup: w, Boost: -15})
	st, err := h.State()
	if err != nil {
		h.Release("test")
		t.Fatal(err)
	}
	held := nices(t, id.PID)
	rel := h.Release("done")
	if !st.AllStopped || len(st.Errors) > 0 || rel.Err != nil {
		t.Errorf("hold %+v, release %+v", st, rel)
	}
	for tid, n := range held {
		if n != 7 {
			t.Errorf("thread %d at nice %d while held, want its own 7", tid, n)
		}
	}
	for tid, n := range nices(t, id.PID) {
		if n != 7 {
			t.Errorf("thread %d at nice %d after release, want its own 7", tid, n)
		}
	}
}

// policies lists the scheduling policy and real-time priority of every
// thread of pid.
func policies(t *testing.T, pid int) map[int][2]uint32 {
	t.Helper()
	tids, err := tasks(pid)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][2]uint32{}
	for _, tid := range tids {
		a, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			t.Fatal(err)
		}
		out[tid] = [2]uint32{a.Policy, a.Priority}
	}
	return out
}

// A raised thread runs SCHED_FIFO until it stops and then has its own
// policy and nice value back; a thread with a real-time policy of its own
// keeps it; holds (running, and stopped by our SIGSTOP: raised before the
// seize) leave every thread as it was.
func TestRaiseRestoresOwnPolicy(t *testing.T) {
	testenv.RequirePrivileged(t)
	id, _ := orphan(t, "spinner")
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, id.PID, 7); err != nil {
		t.Fatal(err)
	}
	th := &Thread{TID: id.PID}
	if err := th.raise(5); err != nil {
		t.Fatal(err)
	}
	if p := policies(t, id.PID)[id.PID]; p != [2]uint32{unix.SCHED_FIFO, 5} {
		t.Fatalf("raised thread at policy/priority %v, want SCHED_FIFO 5", p)
	}
	th.unboost()
	if p := policies(t, id.PID)[id.PID]; p != [2]uint32{unix.SCHED_NORMAL, 0} {
		t.Fatalf("thread at policy/priority %v after unboost, want its own SCHED_NORMAL", p)
	}
	if n := nices(t, id.PID)[id.PID]; n != 7 {
		t.Fatalf("thread at nice %d after unboost, want its own 7", n)
	}
	// A thread of the process with a real-time policy of its own.
	var rr int
	for tid := range policies(t, id.PID) {
		if tid != id.PID {
			rr = tid
			break
		}
	}
	if err := unix.SchedSetAttr(rr, &unix.SchedAttr{Policy: unix.SCHED_RR, Priority: 2}, 0); err != nil {
		t.Fatal(err)
	}
	own := policies(t, id.PID)
	check := func(when string) {
		t.Helper()
		for tid, p := range policies(t, id.PID) {
			if want, ok := own[tid]; ok && p != want {
				t.Errorf("%s: thread %d at policy/priority %v, want its own %v", when, tid, p, want)
			}
		}
	}
	w := NewWakeup()
	defer w.Stop()
	for _, stopped := range []bool{false, true} {
		if stopped {
			if err := id.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 5*time.Second, "group stop", func() bool { return strings.Trim(states(t, id.PID), "T") == "" })
		}
		// The tracer runs real-time while it holds, and not after.
		var tracer int
		var tracerPolicy uint32
		h := Start(id, Options{Wakeup: w, Boost: -15, RealTime: 3, Continue: func() bool { return stopped },
			OnSeized: func() {
				tracer = unix.Gettid()
				if a, err := unix.SchedGetAttr(0, 0); err == nil {
					tracerPolicy = a.Policy
				}
			}})
		st, err := h.State()
		if err != nil {
			h.Release("test")
			t.Fatal(err)
		}
		check(fmt.Sprintf("held (sigstopped %v)", stopped))
		rel := h.Release("done")
		if !st.AllStopped || len(st.Errors) > 0 || rel.Err != nil {
			t.Errorf("hold %+v, release %+v", st, rel)
		}
		check(fmt.Sprintf("released (sigstopped %v)", stopped))
		if tracerPolicy != unix.SCHED_FIFO {
			t.Errorf("tracer thread ran at policy %d while holding, want SCHED_FIFO", tracerPolicy)
		}
		if a, err := unix.SchedGetAttr(tracer, 0); err == nil && a.Policy != unix.SCHED_NORMAL {
			t.Errorf("tracer thread %d at policy %d after the release, want SCHED_NORMAL", tracer, a.Policy)
		}
		waitUntil(t, 5*time.Second, "running after release", func() bool {
			return !strings.ContainsAny(states(t, id.PID), "tT")
		})
	}
}

// RealTime runs the caller real-time on its own thread until restored,
// and leaves that thread as it was.
func TestRealTimeSelf(t *testing.T) {
	testenv.RequirePrivileged(t)
	done := make(chan error)
	go func() {
		restore, err := RealTime(4)
		if err != nil {
			done <- fmt.Errorf("RealTime(4) refused as root: %w", err)
			return
		}
		tid := unix.Gettid()
		a, err := unix.SchedGetAttr(0, 0)
		if err != nil || a.Policy != unix.SCHED_FIFO || a.Priority != 4 {
			restore()
			done <- fmt.Errorf("while real-time: %+v, %v; want SCHED_FIFO 4", a, err)
			return
		}
		restore()
		if a, err := unix.SchedGetAttr(tid, 0); err != nil || a.Policy != unix.SCHED_NORMAL {
			done <- fmt.Errorf("after restore: %+v, %v; want SCHED_NORMAL", a, err)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Error(err)
	}
	restore, err := RealTime(0)
	restore()
	if a, _ := unix.SchedGetAttr(0, 0); err != nil || a.Policy != unix.SCHED_NORMAL {
		t.Errorf("RealTime(0): %v, policy %d; want no error and no change", err, a.Policy)
	}
}
