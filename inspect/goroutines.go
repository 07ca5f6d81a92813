package inspect

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/procmem"
	"github.com/mapsentry/mapsentry/symbolizer"
	"github.com/mapsentry/mapsentry/threadregs"
)

// Goroutines reads every goroutine of the stopped process pid: the g's and
// the PCs of their stacks, not yet symbolized (Snapshot.Symbolize does that
// after the resume). Running goroutines unwind from their thread's
// registers: every thread's from a brief ptrace seize (writes nothing into
// the target; /proc/PID/task/TID/syscall when ptrace is refused), then
// known overrides (the crashing threads' registers as the probe saw them).
// ctx's deadline bounds the read. It returns the registers it unwound
// from, by thread id, too (partner detection looks at them).
func Goroutines(ctx context.Context, pid int, mem symbolizer.MemReader, b *probes.Binary,
	known map[int]symbolizer.Registers) (*symbolizer.Snapshot, map[int]symbolizer.Registers, error) {
	if b == nil || b.Table == nil || b.Layout == nil {
		return nil, nil, errors.New("binary not inspected")
	}
	regs := map[int]symbolizer.Registers{}
	if pr, err := threadregs.Ptrace(pid); err == nil || len(pr) > 0 {
		regs = threadregs.ForUnwind(pr)
	} else if fr, ferr := threadregs.FromProc(pid); ferr == nil {
		regs = fr
	}
	for tid, r := range known {
		regs[tid] = r
	}
	return GoroutinesFrom(ctx, pid, mem, b, regs)
}

// GoroutinesFrom is Goroutines with every thread's registers already in
// hand: a process held through ptrace (tracehold) can only be asked by
// its tracer, which read them.
func GoroutinesFrom(ctx context.Context, pid int, mem symbolizer.MemReader, b *probes.Binary,
	regs map[int]symbolizer.Registers) (*symbolizer.Snapshot, map[int]symbolizer.Registers, error) {
	if b == nil || b.Table == nil || b.Layout == nil {
		return nil, nil, errors.New("binary not inspected")
	}
	if b.Allgs == 0 {
		return nil, nil, fmt.Errorf("runtime.allgs not found: %s", b.AllgsErr)
	}
	// The runtime's waitsince is nanotime(), CLOCK_MONOTONIC: "N minutes"
	// in a traceback is our clock minus it.
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	deadline, _ := ctx.Deadline()
	var bias uint64
	if b.PIE { // runtime addresses are link addresses plus the load bias
		var err error
		if bias, err = procmem.LoadBias(pid, b.Entry); err != nil {
			return nil, regs, err
		}
	}
	snap, err := symbolizer.Capture(mem, b.Table, b.Layout, regs, symbolizer.CaptureOptions{
		Allgs: b.Allgs, Deadline: deadline, Nanotime: ts.Nano(), LoadBias: bias,
	})
	if err != nil {
		return nil, regs, fmt.Errorf("capture goroutines of pid %d: %w", pid, err)
	}
	return snap, regs, nil
}
