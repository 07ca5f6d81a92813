package capture

import (
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/tracehold"
)

// run is one crashing process, step by step (see the package comment).
// Each step records what it could not do in the report and the next one
// goes on: the release happens on every path, and so does the report.
func (c *Capturer) run(s *session) {
	if s.suppressed {
		c.runSuppressed(s)
		return
	}
	var tl timeline
	tl.mark(s, "session")
	// While the process is held this goroutine copies: it runs real-time
	// (freeze.realtime) until the release, like the tracer and the threads
	// on their way into their stops.
	normal, _ := tracehold.RealTime(c.cfg.RealTime)
	f := c.hold(s)
	if f.held != nil && f.held.SeizedNS > s.first.Ktime {
		tl.at("seized", f.held.SeizedNS-s.first.Ktime)
	}
	tl.mark(s, "held")
	// Locate waits for the process's other events (the ring buffer may
	// still carry them): outside a worker slot, which is for copying.
	t, cr, cleanup := c.locate(s, f)
	defer cleanup()
	tl.mark(s, "located")
	if c.pool.acquire(s.deadline) {
		tl.mark(s, "slot")
		c.copy(s, f, t, cr)
		c.pool.done()
		tl.mark(s, "copied")
	} else {
		// Queued behind other copies past the budget: the hold's own
		// deadline has released the process; report what is known.
		for _, st := range c.stages {
			cr.Capture.Missing = append(cr.Capture.Missing, st.Name())
		}
	}
	c.release(s, f, cr)
	normal()
	tl.mark(s, "released")
	s.log.Debug("timeline: ms from the crash event", tl.attrs()...)
	c.analyse(t, cr)
	c.publish(s, t, cr)
}

// timeline records when a session reached each step, in ms from its
// crash event (debug log: where a freeze's time goes).
type timeline []any

func (tl *timeline) mark(s *session, step string) {
	tl.at(step, bpf.Monotonic()-s.first.Ktime)
}

// at records step at ns after the crash event.
func (tl *timeline) at(step string, ns uint64) {
	*tl = append(*tl, step, float64(ns/1000)/1000)
}

func (tl timeline) attrs() []any { return tl }
