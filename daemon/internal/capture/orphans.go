package capture

import (
	"errors"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// ResumeOrphans releases processes the BPF side holds (waiting in the
// probe, or stopped by its SIGSTOP) that no session owns, for longer than
// twice the freeze budget: a crash whose event was dropped or whose
// session ended without reaching it. Cheap; run it periodically: while no
// stop state was created since a listing that found none (an idle host)
// it is a memory read. Not safe for concurrent use (the daemon's pulse).
func (c *Capturer) ResumeOrphans() {
	gen, genErr := c.k.StopGeneration()
	if genErr == nil && c.orphans.clean && gen == c.orphans.gen {
		return
	}
	states, err := c.k.StopStates()
	if err != nil {
		return
	}
	c.orphans.clean, c.orphans.gen = genErr == nil && len(states) == 0, gen
	now := bpf.Monotonic()
	for pid, st := range states {
		switch st.Phase() {
		case bpf.StopWaiting, bpf.StopSigstop:
		default:
			continue
		}
		if now-st.FirstKtime < uint64(2*c.cfg.FreezeMax) {
			continue
		}
		c.mu.Lock()
		s, active := c.sessions[int(pid)]
		c.mu.Unlock()
		if active && s.start == st.StartBoottime {
			continue
		}
		c.releaseOrphan(pid, st)
	}
}

// releaseOrphan marks pid released (waiting threads leave the probe) and,
// if the probe sent it SIGSTOP, resumes it — only if it is still the same
// process.
func (c *Capturer) releaseOrphan(pid uint32, st bpf.Stop) {
	if err := c.k.Release(pid, st.StartBoottime); err != nil {
		return
	}
	what := "released"
	if st.Flags&bpf.StopFlagSigstopSent != 0 {
		id := procmem.Identity{PID: int(pid), StartTime: startTicks(st.StartBoottime)}
		switch err := id.Resume(); {
		case errors.Is(err, procmem.ErrGone):
			what = "gone (nothing to resume)"
		case err != nil:
			c.stats.resumeErr.Add(1)
			c.log.Error("resume a process held without a capture session", "pid", pid, "err", err)
			return
		default:
			what = "resumed"
		}
	}
	c.stats.orphans.Add(1)
	c.log.Warn("process held without a capture session", "pid", pid, "outcome", what)
}

// ReleaseAll releases whatever the probes still hold with no session: the
// last step of a stop, after Close.
func (c *Capturer) ReleaseAll() {
	states, err := c.k.StopStates()
	if err != nil {
		c.log.Error("list held processes", "err", err)
		return
	}
	for pid, st := range states {
		switch st.Phase() {
		case bpf.StopWaiting, bpf.StopSigstop:
			c.releaseOrphan(pid, st)
		}
	}
}
