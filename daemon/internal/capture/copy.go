package capture

import (
	"context"
	"fmt"
	"time"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/report"
)

// copy is step 3: every stage's Capture, in order, while the process is
// held, in a worker slot and under the budget. A stage the budget
// interrupts is listed in capture.cut, the ones it left out in
// capture.missing.
func (c *Capturer) copy(s *session, f *freeze, t *Target, cr *report.Crash) {
	ctx, cancel := context.WithDeadline(context.Background(), s.deadline)
	defer cancel()
	if f.th != nil {
		// A release by the deadline ends the copy too: what is read from
		// a running process is no snapshot.
		go func() {
			select {
			case <-f.th.Done():
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	// Stage starts and the duration count from the crash event, as
	// frozen_ns and all_threads_stopped_ns do.
	sinceEvent := func() int64 { return int64(bpf.Monotonic() - s.first.Ktime) }
	for _, st := range c.stages {
		if t.Mem == nil || ctx.Err() != nil || !time.Now().Before(s.deadline) {
			cr.Capture.Missing = append(cr.Capture.Missing, st.Name())
			continue
		}
		start, began := sinceEvent(), time.Now()
		if err := guard(st.Name(), func() error { return st.Capture(ctx, t, cr) }); err != nil {
			cr.Capture.Errors = append(cr.Capture.Errors, fmt.Sprintf("%s: %v", st.Name(), err))
		}
		// The context's timer may lag the deadline a little; the clock
		// does not.
		if ctx.Err() != nil || !time.Now().Before(s.deadline) {
			cr.Capture.Cut = append(cr.Capture.Cut, st.Name())
		}
		cr.Capture.Stages = append(cr.Capture.Stages, report.Stage{
			Name: st.Name(), StartNS: start, DurationNS: time.Since(began).Nanoseconds()})
	}
	if c.cfg.DebugHold > 0 {
		select {
		case <-time.After(c.cfg.DebugHold):
		case <-ctx.Done():
		}
	}
	if t.Mem != nil {
		cr.Capture.BytesRead, _ = t.Mem.Stats()
	}
	cr.Capture.DurationNS = sinceEvent()
}

// guard runs one stage, turning a panic into an error: a decoder that
// trips over another process's memory must cost that stage, not the daemon
// (and with it every other process it holds).
func guard(stage string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("stage %s panicked: %v", stage, r)
		}
	}()
	return fn()
}
