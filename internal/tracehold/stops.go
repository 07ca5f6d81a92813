package tracehold

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// waitStops collects the ptrace-stop of every seized thread, following
// clones, until all live threads stopped (true), StopWait passed, or a
// release was asked for. It never blocks in wait4 (WNOHANG), so that both
// bounds hold: between looks it sleeps until the next SIGCHLD (Wakeup),
// or a backoff when there is none.
func (t *tracer) waitStops() bool {
	start := time.Now()
	if t.realTime {
		return t.pollStops(start)
	}
	delay := 50 * time.Microsecond
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		wake := t.h.opts.Wakeup.C()
		for t.reap() {
		}
		if t.allStopped() {
			return true
		}
		if time.Since(start) >= t.h.opts.StopWait || t.interrupted() {
			return false
		}
		timer.Reset(delay)
		select {
		case <-wake:
		case <-timer.C:
			if delay < 5*time.Millisecond {
				delay *= 2
			}
		case why := <-t.h.release:
			t.early, t.earlyWhy = true, why
		case <-t.timeout:
			t.early, t.earlyWhy = true, "deadline"
		}
	}
}

// pollStops is waitStops on a real-time tracer thread (pollHeld).
func (t *tracer) pollStops(start time.Time) bool {
	for {
		for t.reap() {
		}
		if t.allStopped() {
			return true
		}
		if time.Since(start) >= t.h.opts.StopWait || t.interrupted() {
			return false
		}
		d := pollEvery
		if dl := t.h.opts.Deadline; !dl.IsZero() {
			if time.Now().After(dl) {
				t.early, t.earlyWhy = true, "deadline"
				return false
			}
			d = min(d, time.Until(dl))
		}
		nanosleep(d)
	}
}

func (t *tracer) allStopped() bool {
	for _, th := range t.threads {
		if !th.Stopped && !th.Exited {
			return false
		}
	}
	return true
}

// reap takes one wait status of this thread's tracees (__WNOTHREAD: never
// another hold's); false when none is ready.
func (t *tracer) reap() bool {
	var ws unix.WaitStatus
	tid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL|unix.WNOTHREAD, nil)
	if err != nil || tid <= 0 {
		return false
	}
	th := t.threads[tid]
	if th == nil { // a clone, auto-attached before its parent's event
		th = &Thread{TID: tid}
		t.threads[tid] = th
	}
	switch {
	case ws.Exited() || ws.Signaled():
		th.Exited, th.Stopped = true, false
	case ws.Stopped():
		th.Stopped = true
		th.unboost()
		switch event := int(ws) >> 16 & 0xff; event {
		case 0: // signal-delivery-stop: the signal is ours to pass on
			th.Signal = ws.StopSignal()
		case unix.PTRACE_EVENT_CLONE:
			if msg, err := unix.PtraceGetEventMsg(tid); err == nil && t.threads[int(msg)] == nil {
				t.threads[int(msg)] = &Thread{TID: int(msg)}
			}
		}
	}
	return true
}

// letGo releases the process and records how; it reports whether the
// tracer thread must exit to detach threads it could not detach in place.
func (t *tracer) letGo(why string) (exit bool) {
	h := t.h
	if h.opts.BeforeRelease != nil {
		h.opts.BeforeRelease()
	}
	for t.reap() {
	}
	// Before the detach: once let go, the process runs into its fatal
	// error and may be gone in microseconds.
	res := Released{Why: why, Gone: h.id.Check() != nil}
	ours := h.opts.Continue != nil && h.opts.Continue()
	if ours {
		// Flush any SIGSTOP of ours still queued (SIGCONT discards
		// pending stop signals) and end a group stop not yet continued,
		// so that nothing stops the process again once detached.
		if err := h.id.Signal(unix.SIGCONT); err == nil {
			h.state.Continued = true
		}
	}
	for _, th := range t.threads {
		th.unboost()
		if th.Exited {
			continue
		}
		if !th.Stopped {
			exit = true
			continue
		}
		sig := th.Signal
		if sig == unix.SIGSTOP && ours {
			sig = 0 // our own SIGSTOP, caught before it stopped anything
		}
		if err := detach(th.TID, sig); err != nil {
			if !errors.Is(err, unix.ESRCH) {
				res.Err = errors.Join(res.Err, err)
			}
			exit = true
			continue
		}
		res.Detached++
	}
	// A thread cloned at the last moment is traced (TRACECLONE) though
	// never seen: ending this thread lets it go too.
	if !exit && stillTracing() {
		exit = true
	}
	res.AtNS = monotonic()
	res.ByExit = exit
	h.result = res
	return exit
}

func detach(tid int, sig unix.Signal) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(tid), 0, uintptr(sig), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// stillTracing reports whether this thread still traces anything: wait4
// says ECHILD only when it has no tracee (and no child) left.
func stillTracing() bool {
	var ws unix.WaitStatus
	_, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL|unix.WNOTHREAD, nil)
	return !errors.Is(err, unix.ECHILD)
}

// boost gives the thread the nice value n until unboost, when n is below
// its own (Options.Boost). Linux keeps a nice value per thread; the raw
// getpriority answer is 20 - nice.
func (th *Thread) boost(n int) error {
	if n == 0 {
		return nil
	}
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, th.TID)
	if err != nil || 20-raw <= n {
		return err
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, th.TID, n); err != nil {
		return err
	}
	th.ownNice, th.boosted = 20-raw, true
	return nil
}

// raise runs the thread under SCHED_FIFO at prio until unboost
// (Options.RealTime), unless it has a real-time or deadline policy of its
// own already.
func (th *Thread) raise(prio int) error {
	if prio <= 0 || th.ownSched != nil || th.Stopped || th.Exited {
		return nil
	}
	own, err := toFIFO(th.TID, prio)
	th.ownSched = own
	return err
}

// unboost puts the thread's own policy and nice value back.
func (th *Thread) unboost() {
	if th.ownSched != nil {
		own := *th.ownSched
		if err := unix.SchedSetAttr(th.TID, &own, 0); err == nil || errors.Is(err, unix.ESRCH) {
			th.ownSched = nil
		}
	}
	if th.boosted && unix.Setpriority(unix.PRIO_PROCESS, th.TID, th.ownNice) == nil {
		th.boosted = false
	}
}
