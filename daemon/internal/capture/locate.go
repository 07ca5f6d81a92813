package capture

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/report"
)

// settle is how long events of a process not held (or whose hit count is
// unknown) are gathered: events already in the ring buffer may still be
// on their way.
const settle = 3 * time.Millisecond

// locate is step 2: gather the process's fatal events, find its binary
// and load bias, open its memory and start the report. The returned
// cleanup closes what locate opened.
func (c *Capturer) locate(s *session, f *freeze) (*Target, *report.Crash, func()) {
	events := c.gather(s, f)
	bin, owned, binErr := c.binary(s.pid, events[0])
	var bias uint64
	if bin != nil && bin.PIE {
		var err error
		if bias, err = procmem.LoadBias(s.pid, bin.Entry); err != nil {
			binErr = errors.Join(binErr, fmt.Errorf("PIE load bias: %w", err))
		}
	}
	cr := c.buildReport(s, events, bin, bias)
	if binErr != nil {
		cr.Capture.Errors = append(cr.Capture.Errors, binErr.Error())
	}
	for _, ev := range events {
		if ev.SigRet < 0 {
			cr.Capture.Errors = append(cr.Capture.Errors,
				fmt.Sprintf("thread %d: the probe could not stop it (bpf_send_signal_thread: errno %d)", ev.Tid, -ev.SigRet))
		}
	}
	t := &Target{ID: s.id, Binary: bin, Events: events, Deadline: s.deadline, Bias: bias, Regs: f.regs()}
	mem, err := procmem.Open(s.pid, c.cfg.MaxBytes)
	if err != nil {
		// Gone already (killed): the message still comes from the
		// binary, where it is a constant.
		cr.Capture.Errors = append(cr.Capture.Errors, err.Error())
		mem = nil
	}
	t.Mem = mem
	c.fillMessage(cr, events, mem, bin, bias)
	return t, cr, func() {
		if mem != nil {
			mem.Close()
		}
		if owned {
			bin.Close()
		}
	}
}

// gather collects the process's fatal events, sorted by kernel time (ring
// order is not time order). A held process has stopped every crashing
// thread, so the probe's hit count says how many to wait for.
func (c *Capturer) gather(s *session, f *freeze) []bpf.Event {
	events := []bpf.Event{s.first}
	want, wait := 0, settle
	if f.held != nil && f.held.AllStopped {
		if st, ok, _ := c.k.StopOf(uint32(s.pid), s.start); ok {
			want, wait = int(st.Hits), 20*time.Millisecond
		}
	}
	if d := time.Until(s.deadline); d < wait {
		wait = max(d, 0)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for want == 0 || len(events) < want {
		select {
		case ev := <-s.events:
			events = append(events, ev)
			continue
		case <-t.C:
		}
		break
	}
	sort.Slice(events, func(i, j int) bool { return events[i].Ktime < events[j].Ktime })
	return events
}

// binary is the crashed process's binary: the watched one named by the
// event's cookie, or — when discovery detached it meanwhile — the held
// process's executable inspected afresh. owned says the caller must close
// it.
func (c *Capturer) binary(pid int, ev bpf.Event) (b *probes.Binary, owned bool, err error) {
	if b, ok := c.bins.Binary(uint32(ev.Cookie >> 32)); ok {
		return b, false, nil
	}
	b, err = c.bins.InspectPID(pid)
	if err != nil {
		return nil, false, fmt.Errorf("binary no longer watched, and inspecting it failed: %w", err)
	}
	return b, true, nil
}
