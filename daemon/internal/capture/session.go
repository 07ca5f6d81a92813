package capture

import (
	"errors"
	"log/slog"
	"time"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/report"
)

// maxSessionEvents bounds the fatal events gathered for one process.
const maxSessionEvents = 256

// session is one crashing process, from its first fatal event to the
// publication of its report.
type session struct {
	pid   int
	start uint64 // the thread group leader's start, boottime ns
	id    procmem.Identity
	first bpf.Event
	// events are the process's later fatal events, until locate.
	events chan bpf.Event
	// deadline is the freeze budget's end: the first event's kernel time
	// plus freeze.max, on the wall clock.
	deadline time.Time
	log      *slog.Logger
	// Crash-loop budget (loop.go): the loop, and whether this crash is
	// only counted.
	loopKey      string
	loopKind     report.Kind
	loopInterval time.Time
	suppressed   bool
	exe          string
	bin          *probes.Binary
}

// HandleEvent takes one fatal or exit event from the ring buffer.
func (c *Capturer) HandleEvent(ev bpf.Event) {
	switch ev.Type {
	case bpf.EventFatal:
		c.handleFatal(ev)
	case bpf.EventExit:
		c.handleExit(ev)
	}
}

func (c *Capturer) handleFatal(ev bpf.Event) {
	c.stats.fatal.Add(1)
	c.log.Debug("fatal event read", "pid", ev.Pid, "tid", ev.Tid, "action", ev.Action,
		"late_ms", float64((bpf.Monotonic()-ev.Ktime)/1000)/1000)
	if c.Config().Freeze && ev.Action == bpf.ActNone {
		// Released already: a thread that reached fatal after the
		// release. It may be the one the runtime prints, so it belongs
		// in the report.
		c.stats.late.Add(1)
		c.addLate(ev)
		return
	}
	pid := int(ev.Pid)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.sessions[pid]; ok && s.start == ev.StartBoottime {
		select {
		case s.events <- ev:
		default:
			c.stats.late.Add(1)
		}
		return
	}
	if c.closed || len(c.sessions) >= c.cfg.Sessions {
		c.drop(ev)
		return
	}
	s := &session{
		pid: pid, start: ev.StartBoottime, first: ev,
		id:       procmem.Identity{PID: pid, StartTime: startTicks(ev.StartBoottime)},
		events:   make(chan bpf.Event, maxSessionEvents),
		deadline: wallOf(ev.Ktime).Add(c.cfg.FreezeMax),
		log:      c.log.With("pid", pid),
	}
	c.budget(s, &ev)
	c.sessions[pid] = s
	c.stats.sessions.Add(1)
	c.watchExit(pid, s.start)
	c.wg.Add(1)
	c.stats.active.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.stats.active.Add(-1)
		c.run(s)
		c.mu.Lock()
		delete(c.sessions, pid)
		c.mu.Unlock()
	}()
}

// drop lets a crash go uncaptured, releasing it first: too many sessions,
// or the capturer is closed. Called with c.mu held.
func (c *Capturer) drop(ev bpf.Event) {
	c.stats.dropped.Add(1)
	if ev.Action == bpf.ActWait || ev.Action == bpf.ActSigstop || ev.Action == bpf.ActHeld {
		c.stats.droppedHeld.Add(1)
	}
	if err := c.k.Release(ev.Pid, ev.StartBoottime); err != nil {
		c.log.Error("release a dropped crash", "pid", ev.Pid, "err", err)
	}
	if ev.Action == bpf.ActSigstop {
		id := procmem.Identity{PID: int(ev.Pid), StartTime: startTicks(ev.StartBoottime)}
		if err := id.Resume(); err != nil && !errors.Is(err, procmem.ErrGone) {
			c.stats.resumeErr.Add(1)
			c.log.Error("resume a dropped crash", "pid", ev.Pid, "err", err)
		}
	}
	c.log.Warn("crash released uncaptured: too many crashing processes at once, or the daemon is stopping",
		"pid", ev.Pid, "action", ev.Action, "sessions", len(c.sessions), "max", c.cfg.Sessions, "closed", c.closed)
}

// Config returns the capture configuration.
func (c *Capturer) Config() Config { return c.cfg }

// wallOf converts a CLOCK_MONOTONIC time (bpf_ktime_get_ns) to the wall
// clock.
func wallOf(ktime uint64) time.Time {
	return time.Now().Add(-time.Duration(int64(bpf.Monotonic()) - int64(ktime)))
}
