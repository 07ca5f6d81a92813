package capture

import (
	"fmt"

	"github.com/mapsentry/mapsentry/report"
)

// Finisher is a Stage with work left after the process was released:
// decoding, symbolizing, partner analysis on what Capture copied. The
// map, goroutine and partner stages only copy bytes while the process is
// held (into t.Mem.Copy(), many ranges per system call); their Finish
// reads t.Mem.Copy().Image(), which never touches the process.
type Finisher interface {
	Finish(t *Target, c *report.Crash) error
}

// analyse is step 5: every Finisher's Finish, after the release, one
// session at a time, deferring to the copies of held processes.
func (c *Capturer) analyse(t *Target, cr *report.Crash) {
	c.pool.analyse(func() {
		for _, st := range c.stages {
			f, ok := st.(Finisher)
			if !ok {
				continue
			}
			if err := guard(st.Name(), func() error { return f.Finish(t, cr) }); err != nil {
				cr.Capture.Errors = append(cr.Capture.Errors, fmt.Sprintf("%s: %v", st.Name(), err))
			}
		}
	})
}
