package capture

import (
	"fmt"
	"time"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/report"
)

// release is step 4: mark the process released in BPF (later probe hits
// run on) and let every thread go, then record in the report how the
// hold went: its kind, how long from the crash event, how it ended. Only
// what really happened is claimed: a process that died while held was
// not resumed.
func (c *Capturer) release(s *session, f *freeze, cr *report.Crash) {
	defer c.pool.holding(-1)
	fr := &cr.Freeze
	fr.Hold, fr.HoldNote = f.kind, f.note
	if f.th == nil {
		if err := c.k.Release(uint32(s.pid), s.start); err != nil {
			s.log.Error("mark released", "err", err)
		}
		fr.Released = "not_held"
		c.countHold(f.kind)
		return
	}
	rel := f.th.Release("capture done")
	if f.recorded {
		c.forgetFrozen(s, f)
	}
	if f.err != nil {
		// Never held (gone before the daemon came, traced by another):
		// nothing was frozen, nothing resumed.
		fr.Released = "not_held"
		c.countHold(f.kind)
		return
	}
	f.stop, _, _ = c.k.StopOf(uint32(s.pid), s.start)
	if f.stop.Flags&bpf.StopFlagSigstopSent != 0 {
		fr.Hold, fr.StopVisible = report.HoldSigstop, true
	}
	if f.stop.Flags&bpf.StopFlagWaitTimeout != 0 {
		fr.HoldNote = joinNote(fr.HoldNote, "a crashing thread gave up waiting inside the probe (freeze.probe_wait) and ran on before it was seized")
	}
	fr.FrozenNS = int64(rel.AtNS - s.first.Ktime)
	if h := f.held; h != nil {
		fr.AllThreadsStopped = h.AllStopped
		fr.AllThreadsStoppedNS = int64(h.StoppedNS - s.first.Ktime)
		for _, e := range h.Errors {
			cr.Capture.Errors = append(cr.Capture.Errors, "hold: "+e)
		}
		if !h.AllStopped {
			cr.Capture.Errors = append(cr.Capture.Errors, fmt.Sprintf("not every thread stopped within %s", c.cfg.StopWait))
		}
	}
	// The budget ended the hold, cut a stage, or ran out before release.
	fr.DeadlineHit = rel.Why == "deadline" || len(cr.Capture.Cut) > 0 || fr.FrozenNS > int64(c.cfg.FreezeMax)
	// ByExit: the tracer thread ended, and the kernel let the threads go.
	fr.Resumed = !rel.Gone && (rel.Detached > 0 || rel.ByExit)
	fr.Released = "detached"
	if rel.Gone {
		fr.Released = "gone"
		cr.Capture.Errors = append(cr.Capture.Errors, "the process died while held (killed): it was not resumed")
	}
	if rel.Err != nil {
		c.stats.resumeErr.Add(1)
		cr.Capture.Errors = append(cr.Capture.Errors, fmt.Sprintf("release: %v (the kernel released the rest when the tracer thread ended)", rel.Err))
	}
	if fr.DeadlineHit {
		c.stats.deadline.Add(1)
		s.log.Warn("freeze budget spent: released before the capture finished", "budget", c.cfg.FreezeMax, "cut", cr.Capture.Cut)
	}
	c.stats.lastFreezeUS.Store(time.Duration(fr.FrozenNS).Microseconds())
	c.countHold(fr.Hold)
}

func (c *Capturer) countHold(kind string) {
	switch kind {
	case report.HoldPtrace:
		c.stats.ptrace.Add(1)
	case report.HoldSigstop:
		c.stats.sigstop.Add(1)
	case report.HoldLate:
		c.stats.lateHold.Add(1)
	default:
		c.stats.none.Add(1)
	}
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
