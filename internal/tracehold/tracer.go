package tracehold

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/procmem"
)

// maxSeizeRounds bounds the passes over /proc/PID/task: a thread created
// by a thread not yet seized appears in the next pass; once every thread
// is seized, PTRACE_O_TRACECLONE attaches the new ones.
const maxSeizeRounds = 64

// trace is the tracer goroutine: the only one that issues ptrace requests
// for this hold, on its locked OS thread — never the main thread: a
// goroutine that ends locked on it does not end it (the runtime parks it),
// so tracees not detached in place would stay traced, and a traced thread
// that exits stays a zombie its process's parent cannot reap (found by
// TestFreezeBudget: a victim left a zombie for minutes).
func (h *Hold) trace() {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The goroutine started here cannot take this thread while it is
		// locked to us: it gets another one.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			h.traceLocked()
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	h.traceLocked()
}

// traceLocked runs the hold on this locked thread, and ends the thread
// when a tracee could not be detached in place.
func (h *Hold) traceLocked() {
	t := &tracer{h: h, threads: map[int]*Thread{}}
	// The tracer runs real-time too (Options.RealTime), one priority above
	// the rest of the hold: every step of it — seize, the wait for the
	// stops, the release, the deadline — is the tracer's, and it must be
	// able to end a copy that runs into the deadline. It only issues
	// system calls and sleeps.
	var own *unix.SchedAttr
	if h.opts.RealTime > 0 {
		own, _ = toFIFO(0, min(h.opts.RealTime+1, 99))
	}
	t.realTime = own != nil
	var timeout <-chan time.Time
	if !h.opts.Deadline.IsZero() {
		tm := time.NewTimer(time.Until(h.opts.Deadline))
		defer tm.Stop()
		timeout = tm.C
	}
	t.timeout = timeout
	t.hold()
	close(h.held)
	why := t.earlyWhy
	if !t.early {
		why = t.whileHeld()
	}
	exit := t.letGo(why)
	close(h.done)
	if !exit && own != nil && unix.SchedSetAttr(0, own, 0) != nil {
		exit = true // end the thread rather than leave it real-time
	}
	if !exit {
		runtime.UnlockOSThread()
	}
	// Returning while still locked ends this OS thread, and with it the
	// ptrace link of every thread not detached in place: the kernel
	// detaches them (exit_ptrace), which is the release.
}

// RealTime runs the calling goroutine on a thread of its own under
// SCHED_FIFO at prio (1-99) until the returned function is called, which
// puts the thread's own policy back and unlocks it. A caller that holds a
// process uses it for what it does while the process is held, so that it
// is not the one waiting for a CPU; it must only copy and block, never
// spin. When the policy cannot be put back the goroutine stays locked and
// its thread ends with it, never left real-time for other goroutines; a
// caller that never restores keeps its thread to itself until it ends.
// prio 0, or a kernel that refuses (err: no CAP_SYS_NICE,
// RestrictRealtime=), leave the caller as it was, restore a no-op.
func RealTime(prio int) (restore func(), err error) {
	if prio <= 0 {
		return func() {}, nil
	}
	runtime.LockOSThread()
	own, err := toFIFO(0, prio)
	if own == nil {
		runtime.UnlockOSThread()
		return func() {}, err
	}
	return func() {
		if unix.SchedSetAttr(0, own, 0) == nil {
			runtime.UnlockOSThread()
		}
	}, nil
}

// toFIFO runs thread tid (0: the calling thread) under SCHED_FIFO at prio
// and returns its own attributes, to put back; nil, and no change, when it
// has a real-time or deadline policy of its own already, or on err.
func toFIFO(tid, prio int) (*unix.SchedAttr, error) {
	own, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return nil, err
	}
	switch own.Policy {
	case unix.SCHED_NORMAL, unix.SCHED_BATCH, unix.SCHED_IDLE:
	default:
		return nil, nil
	}
	if err := unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: uint32(prio)}, 0); err != nil {
		return nil, err
	}
	return own, nil
}

type tracer struct {
	// realTime: this thread runs SCHED_FIFO (toFIFO); it then sleeps
	// in the kernel between looks rather than wait on Go timers.
	realTime bool
	h        *Hold
	threads  map[int]*Thread
	timeout  <-chan time.Time
	// early: a release was asked for (or the deadline came) before the
	// process was held; earlyWhy is its reason.
	early    bool
	earlyWhy string
	// boostFails counts threads whose priority could not be raised
	// (Options.Boost), boostErr the last reason.
	boostFails int
	boostErr   error
	// raiseFails and raiseErr are the same for Options.RealTime.
	raiseFails int
	raiseErr   error
}

// raised records the outcome of raising th to Options.RealTime.
func (t *tracer) raised(err error) {
	if err != nil && !errors.Is(err, unix.ESRCH) {
		t.raiseFails, t.raiseErr = t.raiseFails+1, err
	}
}

// heldPoll is how often a held process is checked for death.
const heldPoll = 20 * time.Millisecond

// whileHeld waits for the release or the deadline. A process killed
// meanwhile (SIGKILL reaches ptrace-stopped threads) is let go within
// heldPoll: its parent learns of its death only once its tracer has reaped
// or released it. (Not on every SIGCHLD: in a storm that would wake every
// held tracer for every stop of every other process.)
func (t *tracer) whileHeld() string {
	if t.realTime {
		return t.pollHeld()
	}
	tick := time.NewTicker(heldPoll)
	defer tick.Stop()
	for {
		select {
		case why := <-t.h.release:
			return why
		case <-t.timeout:
			return "deadline"
		case <-tick.C:
			for t.reap() {
			}
			if t.allExited() {
				return "exited"
			}
		}
	}
}

// pollHeld is whileHeld on a real-time tracer thread: it sleeps in the
// kernel (nanosleep, woken by its own timer) between looks at the release
// request and the clock, so that the deadline is kept within a sleep of
// it whatever the Go scheduler's timers are doing. (A Go timer fires from
// a P that some thread must run: with the copying session real-time on
// that P, a 5 ms budget ended up to 13 ms late.)
func (t *tracer) pollHeld() string {
	deadline := t.h.opts.Deadline
	reaped := time.Now()
	for {
		select {
		case why := <-t.h.release:
			return why
		default:
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			return "deadline"
		}
		if now.Sub(reaped) >= heldPoll {
			for t.reap() {
			}
			if t.allExited() {
				return "exited"
			}
			reaped = now
		}
		d := pollEvery
		if !deadline.IsZero() {
			d = min(d, deadline.Sub(now))
		}
		nanosleep(d)
	}
}

// pollEvery is how often a real-time tracer looks (pollHeld, pollStops).
const pollEvery = 250 * time.Microsecond

func nanosleep(d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

func (t *tracer) allExited() bool {
	for _, th := range t.threads {
		if !th.Exited {
			return false
		}
	}
	return true
}

// interrupted reports (and remembers) a release asked for mid-hold.
func (t *tracer) interrupted() bool {
	if t.early {
		return true
	}
	select {
	case why := <-t.h.release:
		t.early, t.earlyWhy = true, why
	case <-t.timeout:
		t.early, t.earlyWhy = true, "deadline"
	default:
	}
	return t.early
}

// hold seizes, waits for the stops and reads registers, filling h.state.
func (t *tracer) hold() {
	h := t.h
	if err := h.id.Check(); err != nil {
		h.heldErr = fmt.Errorf("hold pid %d: %w: %w", h.id.PID, ErrNotHeld, err)
		return
	}
	if err := t.seizeAll(); err != nil {
		h.heldErr = err
		return
	}
	h.state.SeizedNS = monotonic()
	t.continueGroupStop()
	if t.boostFails > 0 {
		h.state.Errors = append(h.state.Errors, fmt.Sprintf("%d threads not raised to nice %d until their stop: %v "+
			"(needs CAP_SYS_NICE; in a crash storm the hold waits longer for them)", t.boostFails, h.opts.Boost, t.boostErr))
	}
	if h.opts.OnSeized != nil {
		h.opts.OnSeized()
	}
	// Now that the probe's waiters may leave, every thread runs into its
	// stop at once (Options.RealTime).
	for t.reap() {
	}
	for _, th := range t.threads {
		t.raised(th.raise(h.opts.RealTime))
	}
	if t.raiseFails > 0 {
		h.state.Errors = append(h.state.Errors, fmt.Sprintf("%d threads not raised to SCHED_FIFO %d until their stop: %v "+
			"(needs CAP_SYS_NICE, and a real-time budget in their cgroup; in a crash storm the hold waits longer for them)",
			t.raiseFails, h.opts.RealTime, t.raiseErr))
	}
	h.state.AllStopped = t.waitStops()
	h.state.StoppedNS = monotonic()
	if !h.state.AllStopped {
		h.state.Errors = append(h.state.Errors, t.notStopped()...)
	}
	for _, th := range t.threads {
		if th.Stopped {
			th.RegsErr = unix.PtraceGetRegs(th.TID, &th.Regs)
		}
	}
	h.state.Threads = t.threads
}

// continueGroupStop ends the group stop our SIGSTOP may have started, as
// soon as every thread is seized, so that ptrace alone holds the process
// and the tracer's death (even SIGKILL) lets it go: the window in which
// a dead daemon leaves it stopped is the seize pass, not the wait for the
// stops. Safe this early: PTRACE_SEIZE of a thread in a group stop
// returns once it is in TASK_TRACED, where SIGCONT only queues a notify
// trap; a thread still running has our PTRACE_INTERRUPT pending and
// stops before it runs a user instruction.
func (t *tracer) continueGroupStop() {
	h := t.h
	if h.opts.Continue == nil || t.early || !h.opts.Continue() {
		return
	}
	if err := h.id.Signal(unix.SIGCONT); err != nil {
		h.state.Errors = append(h.state.Errors, fmt.Sprintf("continue the group stop: %v", err))
		return
	}
	h.state.Continued = true
}

// seizeAll seizes and interrupts every thread of the process, pass after
// pass until a pass finds no new one.
func (t *tracer) seizeAll() error {
	pid := t.h.id.PID
	// A thread in the group stop of our SIGSTOP must run to re-enter its
	// stop as traced before PTRACE_SEIZE returns: raised first, it does
	// so at once (it runs no user instruction on the way, or, not yet in
	// the group stop, only until it takes it: at its next kernel entry).
	raiseFirst := t.h.opts.RealTime > 0 && t.h.opts.Continue != nil && t.h.opts.Continue()
	for round := 0; round < maxSeizeRounds; round++ {
		tids, err := tasks(pid)
		if err != nil {
			return fmt.Errorf("hold pid %d: %w: %w", pid, ErrNotHeld, err)
		}
		added := 0
		for _, tid := range tids {
			if _, ok := t.threads[tid]; ok || len(t.threads) >= t.h.opts.MaxThreads {
				continue
			}
			th := &Thread{TID: tid}
			if raiseFirst {
				t.raised(th.raise(t.h.opts.RealTime))
			}
			if err := seize(tid); err != nil {
				th.unboost()
				if !errors.Is(err, unix.ESRCH) { // ESRCH: it exited meanwhile
					t.h.state.Errors = append(t.h.state.Errors, fmt.Sprintf("thread %d: %v", tid, err))
				}
				if tid == pid && errors.Is(err, unix.EPERM) {
					return fmt.Errorf("seize pid %d: %w: %w (traced by another process?)", pid, ErrNotHeld, err)
				}
				continue
			}
			if err := th.boost(t.h.opts.Boost); err != nil && !errors.Is(err, unix.ESRCH) {
				t.boostFails, t.boostErr = t.boostFails+1, err
			}
			t.threads[tid] = th
			added++
		}
		if added == 0 || t.interrupted() {
			break
		}
	}
	if len(t.threads) == 0 {
		return fmt.Errorf("hold pid %d: %w: no thread could be seized", pid, ErrNotHeld)
	}
	return nil
}

func seize(tid int) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(tid), 0, unix.PTRACE_O_TRACECLONE, 0, 0)
	if errno != 0 {
		return fmt.Errorf("seize: %w", errno)
	}
	if err := unix.PtraceInterrupt(tid); err != nil {
		return fmt.Errorf("interrupt: %w", err)
	}
	return nil
}

// tasks lists the thread ids of pid.
func tasks(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list threads: %w", procmem.ErrGone)
	}
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out, nil
}

func monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// notStopped says which threads have not reached their stop, and what the
// kernel says they are doing: the first question when a hold is partial.
func (t *tracer) notStopped() []string {
	var out []string
	for tid, th := range t.threads {
		if th.Stopped || th.Exited {
			continue
		}
		dir := fmt.Sprintf("/proc/%d/task/%d/", t.h.id.PID, tid)
		state, wchan := "?", "?"
		if st, err := procmem.ReadStat(dir + "stat"); err == nil {
			state = string(st.State)
		}
		if b, err := os.ReadFile(dir + "wchan"); err == nil {
			wchan = string(b)
		}
		out = append(out, fmt.Sprintf("thread %d did not stop (state %s, in %s)", tid, state, wchan))
		if len(out) == 8 {
			break
		}
	}
	return out
}
