package inspect

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// GoroutineOptions are the capture options for binary b in a process
// whose load bias is bias (procmem.LoadBias; 0 unless b is PIE): allgs,
// the bias, and the freeze deadline from ctx. Compute the bias before the
// process is held.
func GoroutineOptions(ctx context.Context, b *probes.Binary, bias uint64) (symbolizer.CaptureOptions, error) {
	if b == nil || b.Table == nil || b.Layout == nil {
		return symbolizer.CaptureOptions{}, errors.New("binary not inspected")
	}
	if b.Allgs == 0 {
		return symbolizer.CaptureOptions{}, fmt.Errorf("runtime.allgs not found: %s", b.AllgsErr)
	}
	deadline, _ := ctx.Deadline()
	return symbolizer.CaptureOptions{Allgs: b.Allgs, Deadline: deadline, LoadBias: bias}, nil
}

// CopyGoroutines is the held phase of a goroutine dump of a process we
// stopped ourselves (a live dump's SIGSTOP), not one held through ptrace:
// the registers of every thread come from a brief ptrace seize (which
// writes nothing into the target; /proc/PID/task/TID/syscall when ptrace
// is refused), overridden by known ones; then CopyGoroutinesFrom. A
// process the crash path holds (tracehold) must go through
// CopyGoroutinesFrom with the tracer's registers: nobody else can seize
// its threads.
func CopyGoroutines(ctx context.Context, pid int, cp *procmem.Copy, b *probes.Binary, bias uint64,
	known map[int]symbolizer.Registers) (*symbolizer.Snapshot, map[int]symbolizer.Registers, error) {
	if _, err := GoroutineOptions(ctx, b, bias); err != nil {
		return nil, nil, err // before any seize
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
	return CopyGoroutinesFrom(ctx, pid, cp, b, bias, regs)
}

// CopyGoroutinesFrom copies every goroutine's bytes into cp
// (symbolizer.CopyGoroutines) with every thread's registers already in
// hand: a process held through ptrace (tracehold) can only be asked by
// its tracer, which read them. Nothing is unwound or named: after the
// release, Snapshot.Analyse on cp.Image() unwinds and Snapshot.Symbolize
// names. It returns regs too (partner detection looks at them).
func CopyGoroutinesFrom(ctx context.Context, pid int, cp *procmem.Copy, b *probes.Binary, bias uint64,
	regs map[int]symbolizer.Registers) (*symbolizer.Snapshot, map[int]symbolizer.Registers, error) {
	opt, err := GoroutineOptions(ctx, b, bias)
	if err != nil {
		return nil, nil, err
	}
	// The runtime's waitsince is nanotime(), CLOCK_MONOTONIC: "N minutes"
	// in a traceback is our clock minus it.
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	opt.Nanotime = ts.Nano()
	snap, err := symbolizer.CopyGoroutines(cp, b.Layout, regs, opt)
	if err != nil {
		return nil, regs, fmt.Errorf("copy goroutines of pid %d: %w", pid, err)
	}
	return snap, regs, nil
}
