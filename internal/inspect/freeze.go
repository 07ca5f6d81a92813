package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
)

// Hooks connect a live freeze to the daemon. Every field may be nil.
type Hooks struct {
	// Busy reports that someone else holds pid stopped: a crash capture
	// (the BPF side's freeze state). A busy process is refused before it is
	// touched, and at resume time it is left to its owner, which resumes it.
	Busy func(id procmem.Identity) bool
	// Frozen records durably that we hold id stopped, Thawed forgets it:
	// a daemon killed mid-freeze leaves the record, and the next one (or
	// the unit's ExecStopPost) resumes the process.
	Frozen func(id procmem.Identity, since time.Time) error
	Thawed func(id procmem.Identity) error
	// Binary, when set, lends the binary at exe (a /proc/PID/exe link)
	// that discovery already inspected, and a release to call when done;
	// ok false: the Inspector inspects it itself (and caches it).
	Binary func(exe string) (b *probes.Binary, release func(), ok bool)
}

// Freeze is how a live freeze went (JSON: the `freeze` of decode and dump
// answers).
type Freeze = apitype.Freeze

// hold is one live freeze. resume is safe to call many times and from any
// goroutine; the first call decides.
type hold struct {
	id     procmem.Identity
	hooks  Hooks
	log    *slog.Logger
	t0     time.Time
	signal bool // we sent SIGSTOP, so we owe a SIGCONT

	once    sync.Once
	mu      sync.Mutex
	info    Freeze
	stopCtx func() bool
	timer   *time.Timer
	done    chan struct{}
}

// freeze stops id for at most max, resuming it when ctx ends, when max
// passes, or when resume is called — whichever is first. The returned hold
// must always be resumed; it is non-nil whenever the process may have been
// signalled, error or not.
func freeze(ctx context.Context, id procmem.Identity, max, stopWait time.Duration, hooks Hooks, log *slog.Logger) (*hold, error) {
	if hooks.Busy != nil && hooks.Busy(id) {
		return nil, fmt.Errorf("pid %d is held by a crash capture: %w", id.PID, ErrBusy)
	}
	st, err := procmem.ReadStat(fmt.Sprintf("/proc/%d/stat", id.PID))
	if err != nil {
		return nil, err
	}
	h := &hold{id: id, hooks: hooks, log: log, t0: time.Now(), done: make(chan struct{})}
	if st.State == 'T' || st.State == 't' {
		// Someone else stopped it: read it as it is; SIGCONT would undo a
		// stop that is not ours to undo.
		h.info.AlreadyStopped, h.info.AllThreadsStopped = true, true
		return h, nil
	}
	if hooks.Frozen != nil {
		if err := hooks.Frozen(id, h.t0); err != nil {
			log.Error("record frozen process", "pid", id.PID, "err", err)
		}
	}
	if err := id.Signal(syscall.SIGSTOP); err != nil {
		h.thaw()
		return nil, fmt.Errorf("stop pid %d: %w", id.PID, err)
	}
	h.signal = true
	// Resume on cancellation and at the deadline even if the reader is
	// stuck: the process must never outlive our interest stopped.
	h.stopCtx = context.AfterFunc(ctx, func() { h.resume("canceled") })
	h.timer = time.AfterFunc(max, func() {
		h.mu.Lock()
		h.info.DeadlineHit = true
		h.mu.Unlock()
		h.resume("deadline")
	})
	waited, ok, err := procmem.WaitStopped(id.PID, stopWait)
	h.mu.Lock()
	h.info.StopWaitNS, h.info.AllThreadsStopped = waited.Nanoseconds(), ok
	h.mu.Unlock()
	if err != nil {
		return h, fmt.Errorf("wait for the threads of pid %d to stop: %w", id.PID, err)
	}
	if !ok {
		return h, fmt.Errorf("pid %d: not every thread stopped within %s", id.PID, stopWait)
	}
	return h, nil
}

// resume sends SIGCONT once (if we stopped the process) and forgets the
// durable record, unless a crash capture took the process over meanwhile.
func (h *hold) resume(why string) {
	h.once.Do(func() {
		if h.stopCtx != nil {
			h.stopCtx()
		}
		if h.timer != nil {
			h.timer.Stop()
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.info.FrozenNS = time.Since(h.t0).Nanoseconds()
		h.info.ResumedBy = why
		switch {
		case !h.signal:
			h.info.Resumed = false
		case h.hooks.Busy != nil && h.hooks.Busy(h.id):
			// A thread hit a crash probe just before our SIGSTOP landed:
			// the crash path holds the process through ptrace, and its
			// threads stay in their ptrace-stop through a SIGCONT. Its
			// release continues only a SIGSTOP the probe sent, so ours is
			// ended here, or the process would stay stopped after the
			// capture. The frozen record (one per PID) is left to the
			// capture, which may have written its own.
			h.info.ResumedBy = "crash_capture"
			if err := h.id.Resume(); err != nil && !errors.Is(err, procmem.ErrGone) {
				h.log.Error("end our stop of a process a crash capture holds", "pid", h.id.PID, "err", err)
			}
		default:
			if err := h.id.Resume(); errors.Is(err, procmem.ErrGone) {
				h.info.ResumedBy = "gone" // died while stopped: nothing resumed
			} else if err != nil {
				h.log.Error("resume after live inspection", "pid", h.id.PID, "err", err)
			} else {
				h.info.Resumed = true
			}
			h.thaw()
		}
		if why != "done" {
			h.log.Warn("live inspection resumed the process early", "pid", h.id.PID, "why", why,
				"frozen", time.Duration(h.info.FrozenNS))
		}
		close(h.done)
	})
}

func (h *hold) thaw() {
	if h.hooks.Thawed != nil {
		if err := h.hooks.Thawed(h.id); err != nil && !errors.Is(err, procmem.ErrGone) {
			h.log.Warn("forget frozen record", "pid", h.id.PID, "err", err)
		}
	}
}

// resumed reports whether the process was already resumed (the deadline or
// a cancellation came first): what was read since is suspect.
func (h *hold) resumed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// result returns the freeze record; call it after resume.
func (h *hold) result() Freeze {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.info
}
