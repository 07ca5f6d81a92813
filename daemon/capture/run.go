package capture

import "github.com/mapsentry/mapsentry/bpf"

func ms(ns uint64) float64 { return float64(ns/1000) / 1000 }

// run is one crashing process, step by step (see the package comment).
// Each step records what it could not do in the report and the next one
// goes on: the release happens on every path, and so does the report.
func (c *Capturer) run(s *session) {
	if s.suppressed {
		c.runSuppressed(s)
		return
	}
	began := bpf.Monotonic()
	f := c.hold(s)
	held := bpf.Monotonic()
	if !c.pool.acquire(s.deadline) {
		// Queued behind other copies past the budget: the hold's own
		// deadline has released the process; report what is known.
		t, cr, cleanup := c.locate(s, f)
		defer cleanup()
		for _, st := range c.stages {
			cr.Capture.Missing = append(cr.Capture.Missing, st.Name())
		}
		c.release(s, f, cr)
		c.publish(s, t, cr)
		return
	}
	slot := bpf.Monotonic()
	t, cr, cleanup := c.locate(s, f)
	defer cleanup()
	located := bpf.Monotonic()
	c.copy(s, f, t, cr)
	c.pool.done()
	copied := bpf.Monotonic()
	c.release(s, f, cr)
	s.log.Debug("timeline (ms from the event)", "session", ms(began-s.first.Ktime), "held", ms(held-s.first.Ktime),
		"slot", ms(slot-s.first.Ktime), "located", ms(located-s.first.Ktime), "copied", ms(copied-s.first.Ktime),
		"released", ms(uint64(cr.Freeze.FrozenNS)))
	c.analyse(t, cr)
	c.publish(s, t, cr)
}
