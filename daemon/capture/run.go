package capture

// run is one crashing process, step by step (see the package comment).
// Each step records what it could not do in the report and the next one
// goes on: the release happens on every path, and so does the report.
func (c *Capturer) run(s *session) {
	if s.suppressed {
		c.runSuppressed(s)
		return
	}
	f := c.hold(s)
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
	t, cr, cleanup := c.locate(s, f)
	defer cleanup()
	c.copy(s, f, t, cr)
	c.pool.done()
	c.release(s, f, cr)
	c.analyse(t, cr)
	c.publish(s, t, cr)
}
