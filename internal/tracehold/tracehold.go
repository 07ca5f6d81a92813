// Package tracehold owns holding a process stopped through ptrace, and
// letting it go: every thread is seized (PTRACE_SEIZE, with new threads
// followed through PTRACE_O_TRACECLONE) and interrupted (PTRACE_INTERRUPT),
// which stops it in a ptrace-stop that neither the process's parent nor a
// job-control shell can observe, unlike SIGSTOP's group stop. Release
// detaches every thread; if the daemon dies, the kernel detaches them
// itself and the process runs on exactly as without us.
//
// ptrace requests must come from the thread that attached, so each hold
// runs on one goroutine locked to its OS thread from seize to release.
// Nothing else is needed from the caller: Start, wait for Held, read what
// it needs (memory through /proc/PID/mem from any thread), Release.
package tracehold

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/procmem"
)

// Options bound and connect one hold. Every field may be zero.
type Options struct {
	// OnSeized runs once every thread is seized and interrupted, before
	// the wait for them to stop: the crash path tells the BPF probe that
	// threads waiting inside it may leave (they stop on their way out).
	OnSeized func()
	// BeforeRelease runs first on every release path (done, deadline,
	// failure): the crash path marks the process released in BPF so that
	// no probe hit holds it again.
	BeforeRelease func()
	// Continue, asked once every thread is held and again at release,
	// says whether a SIGSTOP of ours may have stopped the process (the
	// probe's fallback): then it is sent SIGCONT, so that only ptrace
	// holds it and its release (or our death) lets it run, and SIGSTOPs
	// caught in signal-delivery-stop are dropped, not re-delivered.
	Continue func() bool
	// StopWait bounds the wait for every thread to reach its ptrace-stop
	// (default 500ms).
	StopWait time.Duration
	// Deadline, if set, releases the process at that time whatever the
	// caller is doing.
	Deadline time.Time
	// MaxThreads bounds the threads seized (default 1<<14).
	MaxThreads int
	// Wakeup, shared by every hold of the process, wakes the wait for
	// stops at each SIGCHLD; without it the wait polls.
	Wakeup *Wakeup
	// Boost, when below a thread's own nice value, is the nice value each
	// seized thread runs at until it reaches its stop; its own value is
	// put back at the stop, and before any release. 0 leaves priorities
	// alone. (A CPU-bound thread runnable behind many others otherwise
	// waits its turn for a CPU before it can stop: in a crash storm,
	// most of a freeze. Needs CAP_SYS_NICE for another user's threads.)
	Boost int
	// RealTime, when 1-99, is the SCHED_FIFO priority each thread not yet
	// stopped runs at once OnSeized has run, until it reaches its stop:
	// its own policy is put back at the stop, and before any release.
	// A nice value is a weight, not a promise: in a crash storm on
	// Linux 6.18 a seized thread at nice -20 waited 48 ms for a CPU
	// behind a hundred nice-0 spinners, while a real-time one is picked
	// at once. Safe because it only goes through the kernel into its
	// ptrace-stop: it was interrupted (PTRACE_INTERRUPT) before it is
	// raised, so it runs no user instruction at the raised priority, and
	// OnSeized has already let the threads waiting inside the probe go.
	// A process our SIGSTOP stopped (Continue) has its threads raised
	// just before their seize: PTRACE_SEIZE of a thread in a group stop
	// waits until that thread has run to re-enter its stop as traced.
	// Where the kernel refuses (no CAP_SYS_NICE; a cgroup with no
	// real-time budget) the thread keeps Boost and Held.Errors says so.
	RealTime int
}

// Thread is one held thread.
type Thread struct {
	TID int
	// Regs are its user registers at the stop (RegsErr when unreadable).
	Regs    unix.PtraceRegs
	RegsErr error
	// Signal is the signal it was about to take when it stopped (a
	// signal-delivery-stop), delivered at release; 0 for none.
	Signal unix.Signal
	// Stopped says it reached a ptrace-stop; Exited that it exited
	// while seized.
	Stopped, Exited bool
	// ownNice is its nice value while boosted is true (Options.Boost).
	ownNice int
	boosted bool
	// ownSched is its own scheduling policy while raised to RealTime.
	ownSched *unix.SchedAttr
}

// Held is the state of a hold once every thread stopped, or the wait for
// them ended.
type Held struct {
	Threads map[int]*Thread
	// AllStopped: every live thread is in a ptrace-stop.
	AllStopped bool
	// SeizedNS and StoppedNS are CLOCK_MONOTONIC times (bpf.Monotonic's
	// clock): every thread seized, and every thread stopped.
	SeizedNS, StoppedNS uint64
	// Continued: the process was in (or entering) a group stop of our
	// SIGSTOP and was sent SIGCONT, ptrace keeping it held.
	Continued bool
	// Errors are per-thread problems (a thread that could not be seized
	// runs on, and the capture should say so).
	Errors []string
}

// Released says how a hold ended.
type Released struct {
	// Why is what asked for it: the caller's reason, or "deadline".
	Why string
	// AtNS is CLOCK_MONOTONIC when every thread was let go.
	AtNS uint64
	// Detached counts threads detached; Gone says the process had died
	// (killed) before the release: nothing was resumed.
	Detached int
	Gone     bool
	// ByExit: some thread could not be detached in place (not stopped),
	// so the tracer thread exited and the kernel detached the rest.
	ByExit bool
	Err    error
}

// ErrNotHeld: the process could not be held (gone, or traced by someone
// else: a debugger).
var ErrNotHeld = errors.New("process not held")

// Hold is one process held through ptrace.
type Hold struct {
	id   procmem.Identity
	opts Options

	held, done chan struct{}
	release    chan string
	once       sync.Once

	// Written by the tracer goroutine before held / done close.
	state   Held
	heldErr error
	result  Released
}

// Start seizes id on a new tracer goroutine and returns at once; Held is
// closed when every thread is stopped or the wait for them ended. The
// hold must be released (Release), whatever happens; a deadline in opts
// releases it by itself.
func Start(id procmem.Identity, opts Options) *Hold {
	if opts.StopWait <= 0 {
		opts.StopWait = 500 * time.Millisecond
	}
	if opts.MaxThreads <= 0 {
		opts.MaxThreads = 1 << 14
	}
	h := &Hold{id: id, opts: opts, held: make(chan struct{}), done: make(chan struct{}), release: make(chan string, 1)}
	go h.trace()
	return h
}

// Held is closed once the process is held, or the attempt ended.
func (h *Hold) Held() <-chan struct{} { return h.held }

// State returns the hold's state; call it after Held is closed. err wraps
// ErrNotHeld when nothing is held.
func (h *Hold) State() (*Held, error) {
	<-h.held
	return &h.state, h.heldErr
}

// Release lets the process go (idempotent; the first reason wins) and
// returns once every thread was let go.
func (h *Hold) Release(why string) Released {
	h.once.Do(func() { h.release <- why })
	<-h.done
	return h.result
}

// Done is closed once the process was let go.
func (h *Hold) Done() <-chan struct{} { return h.done }

// Result is how the hold ended; call it after Done is closed.
func (h *Hold) Result() Released {
	<-h.done
	return h.result
}

func (t *Thread) String() string {
	return fmt.Sprintf("thread %d (stopped=%v signal=%d)", t.TID, t.Stopped, t.Signal)
}
