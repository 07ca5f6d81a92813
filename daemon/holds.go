package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// The heartbeat: every heartbeatEvery the daemon lets the probes hold
// crashes for the next liveFor. A daemon that stops answering (stuck,
// SIGSTOPped, gone) gets no new holds within liveFor; a crash in that
// window waits freeze.probe_wait at most (ptrace and wait holds) and then
// dies as it would have. Every 2 s, not more: each wake-up of an idle
// daemon costs ~0.5 ms of CPU on a small VM, so the pulse alone was half
// of the idle daemon's 0.1 % at once a second (docs/discovery.md).
const (
	heartbeatEvery = 2 * time.Second
	liveFor        = 5 * time.Second
	// gaugesEvery: the pulses between two reads of the kernel counters
	// and discovery gauges (a dozen system calls): lost events are logged
	// within 10 s, and the first pulse sets every gauge.
	gaugesEvery = 5
	// drainMax bounds the wait for the ring buffer to empty at a stop.
	drainMax = 2 * time.Second
)

// defaultWaitersPerCPU sets freeze.probe_waiters when it is 0.
const defaultWaitersPerCPU = 16

// holdCtl is the hold's configuration for the probes.
func holdCtl(cfg config.FreezeConfig) bpf.HoldCtl {
	waiters := cfg.ProbeWaiters
	if waiters == 0 {
		// A crash storm of more processes than slots sends the rest
		// SIGSTOP (or holds them late): those were the storm's tail
		// (bench/storm, docs/freeze.md). The waiters yield their CPU.
		waiters = min(defaultWaitersPerCPU*runtime.NumCPU(), 1024)
	}
	mode := uint32(bpf.HoldWait)
	if cfg.Hold == config.HoldSigstop {
		mode = bpf.HoldSigstop
	}
	return bpf.HoldCtl{WaitNs: uint64(cfg.ProbeWait), MaxWaiters: uint32(waiters), Mode: mode}
}

// pulse is the daemon's one periodic wake-up, every heartbeatEvery: the
// heartbeat, until hbCtx ends; while ctx lasts, also the orphan check,
// the gauges, and a flush of exec events the kernel sent without a
// wake-up (so they wait 2 s at most).
func (d *Daemon) pulse(hbCtx, ctx context.Context, execRd *ringbuf.Reader) {
	ctl := holdCtl(d.cfg.Freeze)
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for n := 0; ; n++ {
		if err := d.kernel.Heartbeat(liveFor, ctl); err != nil {
			d.log.Error("heartbeat", "err", err)
		}
		select {
		case <-hbCtx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			continue
		}
		d.capture.ResumeOrphans()
		if n%gaugesEvery == 0 {
			d.updateGauges()
		}
		if execRd.AvailableBytes() > 0 {
			_ = execRd.Flush()
		}
	}
}

// stopHolding is a graceful stop, in the order that strands nothing:
// the probes hold no new crash; every event already queued is read and
// gets its session; every session captures (or the budget releases it)
// and releases its process; anything the probes still hold with no
// session is released. Only then may the reader close.
func (d *Daemon) stopHolding(rd *ringbuf.Reader) {
	if err := d.kernel.StopHolding(); err != nil {
		d.log.Error("stop holding", "err", err)
	}
	// A probe hit that saw the daemon live a moment ago submits its event
	// within microseconds; give it that, then wait for the reader.
	time.Sleep(5 * time.Millisecond)
	for end := time.Now().Add(drainMax); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if rd.AvailableBytes() == 0 && d.events.read.Load() == d.events.handled.Load() {
			break
		}
	}
	d.capture.Close()
	d.capture.ReleaseAll()
}

// resumeLeftovers resumes every process a previous daemon's frozen
// records name (a SIGSTOP hold not yet taken over by ptrace, live decode
// and dump stops), marking it released first so a crash probe does not
// hold it again. Records read are resumed even when others were
// malformed. Run it at start-up, before probes.
func (d *Daemon) resumeLeftovers() {
	if d.frozen == nil {
		return
	}
	frozen, err := d.frozen.List()
	if err != nil {
		d.log.Error("read frozen records", "err", err)
	}
	for _, f := range frozen {
		id := procmem.Identity{PID: f.PID, StartTime: f.StartTime, PIDNS: f.PIDNS}
		if err := d.kernel.Release(uint32(f.PID), f.StartBoottimeNS); err != nil {
			d.log.Warn("mark leftover released", "pid", f.PID, "err", err)
		}
		switch err := id.Resume(); {
		case errors.Is(err, procmem.ErrGone):
			d.log.Info("process left stopped by a previous daemon is gone", "pid", f.PID, "stopped_since", f.Since)
		case err != nil:
			d.log.Error("resume leftover stopped process", "pid", f.PID, "err", err)
			continue
		default:
			d.leftovers++
			d.log.Warn("resumed process left stopped by a previous daemon", "pid", f.PID, "stopped_since", f.Since)
		}
		if err := d.frozen.Remove(f.PID); err != nil {
			d.log.Warn("forget frozen record", "pid", f.PID, "err", err)
		}
	}
}

// setProcs lets four goroutines per CPU run at once (unless GOMAXPROCS is
// set): in a crash storm every held process has a tracer, locked to its
// own thread, and a session; with one P per CPU they queued behind the
// copies for the scheduler (measured: storm p50 265-290 ms with 2 Ps,
// 170-190 ms with 8, docs/freeze.md). The kernel, where the daemon's
// threads run at freeze.nice, shares the CPUs out.
func setProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(4 * runtime.NumCPU())
	}
}

// setNice gives every thread of the daemon the nice value n (Linux sets
// priorities per thread; threads created later inherit their creator's).
// It needs CAP_SYS_NICE to go below the current value, unless the unit's
// Nice= did it already; the check says which.
func setNice(n int) Check {
	c := Check{Name: "freeze.nice", OK: true}
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return Check{Name: c.Name, Detail: err.Error()}
	}
	for _, e := range tids {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cur, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil && 20-cur <= n {
			continue // already there (the unit's Nice=), or better
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil {
			c.OK = false
			c.Detail = fmt.Sprintf("cannot set nice %d (needs CAP_SYS_NICE, or Nice= in the unit): %v; "+
				"held processes wait longer for a daemon that loses the CPU in a crash storm", n, err)
		}
	}
	return c
}
