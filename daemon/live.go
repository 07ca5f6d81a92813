package daemon

import (
	"context"
	"time"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/internal/inspect"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// newLive makes the inspector behind POST /v1/decode and /v1/dump, bound
// by the same limits as a crash freeze and tied to the crash path: a
// process the BPF side holds for a crash capture is not touched, and each
// live freeze is recorded durably like a crash freeze, so a daemon killed
// mid-read leaves the process to the next daemon or the unit's
// ExecStopPost to resume. When ctx ends (the daemon stops) every live
// freeze still held is resumed.
func (d *Daemon) newLive(ctx context.Context) *inspect.Inspector {
	in := inspect.New(inspect.Config{
		FreezeMax: d.cfg.Freeze.Max, StopWait: d.cfg.Freeze.StopWait, MaxBytes: d.cfg.Capture.MaxBytes,
		DebugHold: d.cfg.Capture.DebugHold,
	}, inspect.Hooks{
		Busy: d.crashHolds,
		Frozen: func(id procmem.Identity, since time.Time) error {
			return d.frozen.Add(store.Frozen{PID: id.PID, StartTime: id.StartTime, Since: since})
		},
		Thawed: func(id procmem.Identity) error { return d.frozen.Remove(id.PID) },
		Binary: d.probes.Borrow,
	}, d.log)
	context.AfterFunc(ctx, in.Stop)
	return in
}

// crashHolds reports whether the crash path holds id (or is about to): a
// probe hit not yet released.
func (d *Daemon) crashHolds(id procmem.Identity) bool {
	states, err := d.kernel.StopStates()
	if err != nil {
		return false
	}
	st, ok := states[uint32(id.PID)]
	// Boot-time ns to clock ticks (USER_HZ 100), the unit of
	// /proc/PID/stat's start time: a stale entry of an earlier process
	// with the same pid does not count.
	if !ok || st.StartBoottime/1e7 != id.StartTime {
		return false
	}
	switch st.Phase() {
	case bpf.StopWaiting, bpf.StopSigstop, bpf.StopHeld:
		return true
	}
	return false
}
