// Package capture owns the user-space half of the freeze protocol. Each
// crashing process gets a session that runs six named steps, in order:
//
//  1. hold     (hold.go)    seize every thread with ptrace under the budget
//  2. locate   (locate.go)  gather its fatal events, its binary, a report
//  3. copy     (copy.go)    the stages' Capture: copy what the report needs
//  4. release  (release.go) mark it released in BPF, let every thread go
//  5. analyse  (analyse.go) the stages' Finish, on the copy
//  6. publish  (publish.go) hand the report to the Publisher
//
// Only steps 1-4 happen while the process is held, bounded by the freeze
// budget counted from the crash probe's kernel timestamp; nothing in them
// touches the disk. Sessions of different processes run in parallel, the
// copies bounded by a worker pool (pool.go); sessions and queues are
// bounded, and what is dropped is released first and counted.
package capture

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/internal/corefile"
	"github.com/mapsentry/mapsentry/internal/crashsite"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/tracehold"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"

	"golang.org/x/sys/unix"
)

// Kernel is what capture needs of the BPF side (bpf.Kernel).
type Kernel interface {
	// MarkHeld lets threads waiting inside the probe go to the ptrace-stop
	// waiting for them; Release makes later hits run on.
	MarkHeld(pid uint32, startBoottimeNS uint64) error
	Release(pid uint32, startBoottimeNS uint64) error
	StopOf(pid uint32, startBoottimeNS uint64) (bpf.Stop, bool, error)
	StopStates() (map[uint32]bpf.Stop, error)
	StopGeneration() (uint64, error)
}

// Binaries resolves an event's binary id (from the uprobe cookie).
type Binaries interface {
	Binary(id uint32) (*probes.Binary, bool)
	// InspectPID reads a running process's binary afresh, for an event
	// whose binary was detached meanwhile.
	InspectPID(pid int) (*probes.Binary, error)
}

// Reports is where finished reports go (daemon/publish.Publisher). Neither
// call blocks on disk; capture calls them only after the process was
// released anyway. Publish copies the report before it returns;
// publishing an id again replaces it, keeping what Update added
// meanwhile (exit status, late events); Update runs fn later, in call
// order.
type Reports interface {
	Publish(c *report.Crash)
	Update(id string, fn func(*report.Crash))
}

// FrozenRecords remember the processes the daemon holds stopped by a
// SIGSTOP (store.FrozenRecords: small files, no fsync), so that a
// restarted daemon or `mapsentry resume-frozen` resumes them whatever state
// the store is in. A ptrace hold needs none: the kernel releases it when
// the daemon dies.
type FrozenRecords interface {
	Add(f store.Frozen) error
	Remove(pid int) error
}

// Target is a held process, handed to each Stage.
type Target struct {
	ID       procmem.Identity
	Mem      *procmem.Reader
	Binary   *probes.Binary
	Events   []bpf.Event // sorted by kernel time
	Deadline time.Time
	// Bias is the load bias of a PIE binary (0 otherwise): runtime
	// address = link address + Bias.
	Bias uint64
	// Regs are the full registers of every held thread, read by the
	// tracer (nil when the process is not held through ptrace).
	Regs map[int]unix.PtraceRegs

	goroutines *symbolizer.Snapshot // read while held, symbolized after
	threads    map[int]symbolizer.Registers
	site       *crashsite.Site // the located map
	siteEvent  *bpf.Event      // the event it was located from
	diagnosis  *diagnosisCopy  // DiagnoseStage: copied while held
	core       *corefile.Snapshot
}

// Stage adds one part to a crash report. Capture runs while the process is
// held and should only copy; it must respect ctx's deadline (the freeze
// budget). An error is recorded in the report and does not stop other
// stages. A Stage that is also a Finisher analyses after the release.
type Stage interface {
	Name() string
	Capture(ctx context.Context, t *Target, c *report.Crash) error
}

// Config configures capture.
type Config struct {
	// Freeze says whether the BPF side holds crashing processes.
	Freeze bool
	// FreezeMax is the freeze budget, from the crash event to release.
	FreezeMax time.Duration
	// StopWait bounds the wait for every thread to reach its stop.
	StopWait time.Duration
	// Boost is the nice value a held process's threads run at until they
	// reach their stop (tracehold.Options.Boost): freeze.nice.
	Boost int
	// RealTime is the SCHED_FIFO priority they run at once the probe's
	// waiters may leave, until their stop (tracehold.Options.RealTime):
	// freeze.realtime; 0 for none.
	RealTime       int
	MaxBytes       int64
	DebugHold      time.Duration
	IncludeCmdline bool
	Host           string
	// Workers bounds the captures copying at once (default 4); Sessions
	// the crashing processes handled at once (default 256): beyond it a
	// crash is released at once, uncaptured, and counted as dropped.
	Workers  int
	Sessions int
	// PIDNamespace is the nsfs inode of the daemon's PID namespace, the
	// one event PIDs are numbered in; frozen records carry it.
	PIDNamespace uint32
	// Loop is the crash-loop budget (loop.go); zero: every crash in full.
	Loop LoopBudget
	// OnHolding, if set, is called with true when the first process is
	// held and with false once none is any more (in that order, never
	// concurrently; it must not block): the daemon defers its garbage
	// collection meanwhile.
	OnHolding func(any bool)
}

// Stats are the capture counters in `mapsentry status`.
type Stats = apitype.CaptureStats

// Capturer runs one capture session per crashing process.
type Capturer struct {
	k       Kernel
	bins    Binaries
	reports Reports
	frozen  FrozenRecords // may be nil: then only the stray sweep covers a SIGSTOP
	cfg     Config
	stages  []Stage
	log     *slog.Logger
	// OnStored, if set, is called once per crash when its report is
	// handed to Reports: metrics. The publisher wakes the exporter itself
	// once a report is stored.
	OnStored func(c *report.Crash, first bool)
	// OnSuppressed, if set, is called for each crash the loop budget only
	// counted (metrics).
	OnSuppressed func(store.LoopSummary)
	// Loops, if set, keeps the loop summaries.
	Loops LoopSummaries
	loops *loopBudget

	mu       sync.Mutex
	sessions map[int]*session
	exits    map[int]*exitWatch // pid -> crash awaiting its exit status
	closed   bool
	wg       sync.WaitGroup
	pool     *pool
	// wake wakes tracers waiting for stops at each SIGCHLD.
	wake  *tracehold.Wakeup
	stats counters
	// orphans: the stop generation when ResumeOrphans last listed the
	// probes' stop states, and whether it found none (its caller's only).
	orphans struct {
		gen   uint64
		clean bool
	}
}

type counters struct {
	crashes, fatal, late, dropped, deadline, resumeErr, storeErr, orphans, exits, suppressed, sessions, droppedHeld atomic.Uint64
	ptrace, sigstop, lateHold, none                                                                                 atomic.Uint64
	active, lastFreezeUS                                                                                            atomic.Int64
}

// New makes a Capturer.
func New(k Kernel, bins Binaries, reports Reports, frozen FrozenRecords, cfg Config, stages []Stage, log *slog.Logger) *Capturer {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = 256
	}
	return &Capturer{
		k: k, bins: bins, reports: reports, frozen: frozen, cfg: cfg, stages: stages,
		log:      log.With("component", "capture"),
		sessions: make(map[int]*session),
		exits:    make(map[int]*exitWatch),
		pool:     newPool(cfg.Workers, cfg.OnHolding),
		loops:    newLoopBudget(cfg.Loop),
		wake:     tracehold.NewWakeup(),
	}
}

// Stats returns the counters.
func (c *Capturer) Stats() Stats {
	s := &c.stats
	return Stats{
		Sessions: s.sessions.Load(), Crashes: s.crashes.Load(), FatalEvents: s.fatal.Load(), LateEvents: s.late.Load(), Dropped: s.dropped.Load(), DroppedHeld: s.droppedHeld.Load(),
		DeadlineHits: s.deadline.Load(), ResumeErrors: s.resumeErr.Load(), StoreErrors: s.storeErr.Load(),
		OrphansResumed: s.orphans.Load(), ExitsObserved: s.exits.Load(), LoopSuppressed: s.suppressed.Load(),
		Holds: map[string]uint64{report.HoldPtrace: s.ptrace.Load(), report.HoldSigstop: s.sigstop.Load(),
			report.HoldLate: s.lateHold.Load(), report.HoldNone: s.none.Load()},
		ActiveFreezes: s.active.Load(), LastFreezeMicros: s.lastFreezeUS.Load(),
	}
}

// Wait blocks until every session has released its process and published
// its report.
func (c *Capturer) Wait() { c.wg.Wait() }

// Close refuses new sessions (their processes are released at once) and
// waits for the running ones: the last step of a daemon's stop, once the
// ring buffer is drained.
func (c *Capturer) Close() {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	if !already {
		c.wake.Stop()
	}
}

// ticksPerSecond is USER_HZ, the unit of /proc/PID/stat starttime; the
// kernel fixes it at 100 for user space on every architecture.
const ticksPerSecond = 100

func startTicks(boottimeNS uint64) uint64 { return boottimeNS / (1e9 / ticksPerSecond) }
