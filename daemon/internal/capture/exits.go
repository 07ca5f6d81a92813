package capture

import (
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/report"
)

// maxExitWatches bounds crashes waiting for their exit status (a process
// whose exit is never seen must not grow the map forever); maxLate the
// late events kept for one crash before it is published.
const (
	maxExitWatches = 4096
	maxLate        = 64
)

// exitWatch follows a crashed process after its release: its exit status
// and the fatal events of threads that reached fatal after the release.
type exitWatch struct {
	start uint64 // boottime ns
	// crashID is set once the crash is published; until then exit and
	// late events wait here for publish to add them.
	crashID string
	early   *int
	late    []bpf.Event
}

// watchExit starts watching pid. Called with c.mu held.
func (c *Capturer) watchExit(pid int, start uint64) {
	if len(c.exits) >= maxExitWatches {
		for k := range c.exits { // drop an arbitrary old watch
			delete(c.exits, k)
			break
		}
	}
	c.exits[pid] = &exitWatch{start: start}
}

func (c *Capturer) handleExit(ev bpf.Event) {
	pid := int(ev.Pid)
	code := int(ev.ExitCode)
	c.mu.Lock()
	w, ok := c.exits[pid]
	if !ok || w.start != ev.StartBoottime {
		c.mu.Unlock()
		return
	}
	c.stats.exits.Add(1)
	if w.crashID == "" {
		w.early = &code // publish adds it
		c.mu.Unlock()
		return
	}
	delete(c.exits, pid)
	c.mu.Unlock()
	c.reports.Update(w.crashID, func(r *report.Crash) { setExit(&r.Freeze, code) })
	c.log.Info("crashed process exited", "pid", pid, "crash", w.crashID, "exit_code", code)
}

// setExit records a wait-status style exit code (status<<8, or a signal).
func setExit(f *report.Freeze, code int) {
	if sig := code & 0x7f; sig != 0 {
		f.ExitSignal = &sig
	} else {
		st := (code >> 8) & 0xff
		f.ExitStatus = &st
	}
}

// addLate adds an event that arrived after the release to its crash: kept
// for publish, or added to the published report.
func (c *Capturer) addLate(ev bpf.Event) {
	c.mu.Lock()
	w, ok := c.exits[int(ev.Pid)]
	if !ok || w.start != ev.StartBoottime {
		c.mu.Unlock()
		return
	}
	id := w.crashID
	if id == "" {
		if len(w.late) < maxLate {
			w.late = append(w.late, ev)
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	bin, _ := c.bins.Binary(uint32(ev.Cookie >> 32))
	e := lateEvent(&ev, bin)
	c.reports.Update(id, func(r *report.Crash) { r.Fatal.Events = append(r.Fatal.Events, e) })
}
