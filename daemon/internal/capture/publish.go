package capture

import (
	"time"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/report"
)

// publish is step 6: hand the report to Reports, with the exit status
// and late events that arrived since the release; later ones go in as
// updates.
func (c *Capturer) publish(s *session, t *Target, cr *report.Crash) {
	c.takeWatched(s, t, cr, false)
	c.reports.Publish(cr)
	// What arrived while publishing goes in as an update.
	if late, early := c.takeWatched(s, t, cr, true); late || early {
		events, status, signal := cr.Fatal.Events, cr.Freeze.ExitStatus, cr.Freeze.ExitSignal
		c.reports.Update(cr.ID, func(r *report.Crash) {
			r.Fatal.Events, r.Freeze.ExitStatus, r.Freeze.ExitSignal = events, status, signal
		})
	}
	if c.OnStored != nil {
		c.OnStored(cr, true)
	}
	c.stats.crashes.Add(1)
	if c.loops != nil {
		c.loops.remember(s.loopKey, cr)
	}
	s.log.Info("crash captured", "crash", cr.ID, "kind", cr.Fatal.Kind, "message", cr.Fatal.Message,
		"events", len(t.Events), "hold", cr.Freeze.Hold, "frozen", time.Duration(cr.Freeze.FrozenNS))
}

// takeWatched moves the late events and early exit status the process's
// exit watch holds into cr. With published, the watch then names the
// crash, so that later ones update it. It reports what it moved.
func (c *Capturer) takeWatched(s *session, t *Target, cr *report.Crash, published bool) (late, exited bool) {
	c.mu.Lock()
	w, ok := c.exits[s.pid]
	if !ok || w.start != s.start {
		c.mu.Unlock()
		return false, false
	}
	evs, early := w.late, w.early
	w.late, w.early = nil, nil
	if published {
		w.crashID = cr.ID
		if early != nil {
			delete(c.exits, s.pid)
		}
	}
	c.mu.Unlock()
	for i := range evs {
		cr.Fatal.Events = append(cr.Fatal.Events, lateEvent(&evs[i], t.Binary))
	}
	if early != nil {
		setExit(&cr.Freeze, *early)
	}
	return len(evs) > 0, early != nil
}

// lateEvent converts an event of a thread that reached fatal after the
// release.
func lateEvent(ev *bpf.Event, bin *probes.Binary) report.Event {
	e := eventFromBPF(ev, bin, biasOf(int(ev.Pid), bin), wallOffset())
	e.AfterRelease = true
	return e
}

// biasOf is the load bias of pid's PIE binary (0 for others, or unknown).
func biasOf(pid int, bin *probes.Binary) uint64 {
	if bin == nil || !bin.PIE {
		return 0
	}
	bias, _ := procmem.LoadBias(pid, bin.Entry)
	return bias
}
