package capture

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/internal/tracehold"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// freeze is a session's hold: how the process is held and the tracer that
// holds it.
type freeze struct {
	kind string // report.Hold*
	note string
	th   *tracehold.Hold // nil when not held through ptrace
	held *tracehold.Held
	err  error
	// stop is the BPF side's record of the process at release.
	stop bpf.Stop
	// recorded: a frozen record names the process until its release.
	recorded bool
}

// recordFrozen records a process the probe stopped with SIGSTOP, until
// ptrace takes it over: if the daemon dies in between, the next one (or
// resume-frozen) resumes it by the record, identity checked, even out of
// scope. A small file without fsync (store.FrozenRecords): the only disk
// write while held. The stray sweep covers a daemon killed before it.
func (c *Capturer) recordFrozen(s *session) bool {
	if c.frozen == nil {
		return false
	}
	err := c.frozen.Add(store.Frozen{PID: s.pid, StartTime: s.id.StartTime, StartBoottimeNS: s.start,
		Since: wallOf(s.first.Ktime), PIDNS: c.cfg.PIDNamespace})
	if err != nil {
		c.stats.storeErr.Add(1)
		s.log.Warn("record frozen process (the stray sweep still finds it)", "err", err)
		return false
	}
	return true
}

// forgetFrozen removes the frozen record of a hold that no longer needs it.
func (c *Capturer) forgetFrozen(s *session, f *freeze) {
	if err := c.frozen.Remove(s.pid); err != nil {
		s.log.Warn("forget frozen record", "err", err)
	}
	f.recorded = false
}

// holdKind is how a process whose first probe hit did action is held.
func holdKind(action uint32, freezeOn bool) (kind, note string) {
	switch action {
	case bpf.ActWait, bpf.ActHeld:
		return report.HoldPtrace, ""
	case bpf.ActSigstop:
		return report.HoldSigstop, "the probe sent SIGSTOP (freeze.hold=sigstop, no probe could wait, or the kernel cannot run sleepable uprobes)"
	case bpf.ActNoWaiter, bpf.ActUnheld:
		return report.HoldLate, "no probe could wait (freeze.probe_waiters threads already waited) and the parent could see a SIGSTOP: the crashing thread ran on until seized"
	case bpf.ActNoDaemon:
		return report.HoldLate, "the daemon was stopping (or not heart-beating): the crashing thread ran on until seized"
	case bpf.ActTraced:
		return report.HoldNone, "traced by another process (a debugger): captured without a hold"
	}
	if !freezeOn {
		return report.HoldNone, "freeze.enabled=false: observe only"
	}
	return report.HoldNone, fmt.Sprintf("probe action %d", action)
}

// hold is step 1: seize every thread of the process, under the budget.
// Threads waiting inside the probe are let go into their ptrace-stop once
// all are seized; a process our SIGSTOP stopped is continued, so that
// ptrace alone holds it and our death releases it.
func (c *Capturer) hold(s *session) *freeze {
	f := &freeze{}
	f.kind, f.note = holdKind(s.first.Action, c.cfg.Freeze)
	c.pool.holding(1)
	if f.kind == report.HoldNone {
		return f
	}
	if f.kind == report.HoldSigstop {
		f.recorded = c.recordFrozen(s)
	}
	pid, start := uint32(s.pid), s.start
	f.th = tracehold.Start(s.id, tracehold.Options{
		OnSeized: func() {
			if err := c.k.MarkHeld(pid, start); err != nil {
				s.log.Error("mark held", "err", err)
			}
		},
		// Before any thread is let go: later probe hits must run on.
		BeforeRelease: func() {
			if err := c.k.Release(pid, start); err != nil {
				s.log.Error("mark released", "err", err)
			}
		},
		Continue: func() bool {
			st, ok, _ := c.k.StopOf(pid, start)
			return ok && st.Flags&bpf.StopFlagSigstopSent != 0
		},
		StopWait: c.cfg.StopWait,
		Boost:    c.cfg.Boost,
		RealTime: c.cfg.RealTime,
		Deadline: s.deadline,
		Wakeup:   c.wake,
	})
	f.held, f.err = f.th.State()
	if f.recorded && f.held != nil && f.held.Continued {
		// ptrace alone holds it now: our death lets it go, the record
		// has nothing left to rescue.
		c.forgetFrozen(s, f)
	}
	if f.err != nil {
		probe := f.note
		f.kind, f.note = report.HoldNone, "not held: "+f.err.Error()
		if errors.Is(f.err, procmem.ErrGone) {
			f.note = "not held: the process had exited before the daemon came (a crashing thread waits " +
				"inside the probe at most freeze.probe_wait, then runs on)"
		}
		f.note = joinNote(f.note, probe) // why it was not waiting, when it was not
	}
	return f
}

// regs are the full registers of every held thread (nil when not held).
func (f *freeze) regs() map[int]unix.PtraceRegs {
	if f.held == nil {
		return nil
	}
	out := make(map[int]unix.PtraceRegs, len(f.held.Threads))
	for tid, th := range f.held.Threads {
		if th.Stopped && th.RegsErr == nil {
			out[tid] = th.Regs
		}
	}
	return out
}

// unwindRegs are regs for the symbolizer.
func (f *freeze) unwindRegs() map[int]symbolizer.Registers {
	return threadregs.ForUnwind(f.regs())
}
