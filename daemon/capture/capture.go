// Package capture owns the user-space half of the freeze protocol: it groups
// the fatal events of a process, waits until every thread is stopped, runs
// the capture stages under a hard deadline, stores the report, marks the
// process released in BPF and resumes it — always, on every path — and
// records how the process ended.
package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/crashsite"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/procmem"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// Kernel is what capture needs of the BPF side.
type Kernel interface {
	Release(pid uint32, startBoottimeNS uint64) error
	StopStates() (map[uint32]bpf.StopState, error)
}

// Binaries resolves an event's binary id (from the uprobe cookie).
type Binaries interface {
	Binary(id uint32) (*probes.Binary, bool)
	// InspectPID reads a running process's binary afresh, for an event
	// whose binary was detached meanwhile.
	InspectPID(pid int) (*probes.Binary, error)
}

// Target is a frozen process, handed to each Stage.
type Target struct {
	ID       procmem.Identity
	Mem      *procmem.Reader
	Binary   *probes.Binary
	Events   []bpf.Event // sorted by kernel time
	Deadline time.Time
	// Bias is the load bias of a PIE binary (0 otherwise): runtime
	// address = link address + Bias.
	Bias uint64

	goroutines *symbolizer.Snapshot // read while frozen, symbolized after
	threads    map[int]symbolizer.Registers
	site       *crashsite.Site // the located map
	siteEvent  *bpf.Event      // the event it was located from
	diagnosis  *diagnosisCopy  // DiagnoseStage: copied while held
}

// Stage adds one part to a crash report while the process is frozen (map
// decode, goroutine dump, ...). It must respect ctx's deadline; an error is
// recorded in the report and does not stop other stages.
type Stage interface {
	Name() string
	Capture(ctx context.Context, t *Target, c *report.Crash) error
}

// Reports is where finished reports go (daemon/publish.Publisher). Neither
// call blocks on disk, so a slow, full or read-only store never extends a
// freeze. Publish copies the report before it returns; publishing an id
// again replaces it, keeping what Update added meanwhile (exit status,
// late events); Update runs fn later, in call order.
type Reports interface {
	Publish(c *report.Crash)
	Update(id string, fn func(*report.Crash))
}

// FrozenRecords remember the processes the daemon holds stopped, outside
// the report store (store.FrozenRecords), so that a restarted daemon or
// `mapsentry resume-frozen` resumes them whatever state the store is in.
type FrozenRecords interface {
	Add(f store.Frozen) error
	Remove(pid int) error
	List() ([]store.Frozen, error)
}

// Config configures capture.
type Config struct {
	// Freeze says whether the BPF side stops crashing processes.
	Freeze         bool
	FreezeMax      time.Duration
	StopWait       time.Duration
	MaxBytes       int64
	DebugHold      time.Duration
	IncludeCmdline bool
	Host           string
	// PIDNamespace is the nsfs inode of the daemon's PID namespace, the
	// one event PIDs are numbered in; frozen records carry it.
	PIDNamespace uint32
	// Loop is the crash-loop budget (loop.go); zero: every crash in full.
	Loop LoopBudget
}

// Stats are the capture counters in `mapsentry status`.
type Stats = apitype.CaptureStats

// Capturer runs one capture session per crashing process.
type Capturer struct {
	k       Kernel
	bins    Binaries
	reports Reports
	frozen  FrozenRecords
	cfg     Config
	stages  []Stage
	log     *slog.Logger
	// OnStored, if set, is called once per crash when its capture is
	// complete and handed to Reports (first is true): metrics. The
	// publisher wakes the exporter itself once a report is stored.
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
	wg       sync.WaitGroup
	stats    struct {
		crashes, fatal, late, deadline, resumeErr, storeErr, orphans, exits, suppressed atomic.Uint64
		active, lastFreezeUS                                                            atomic.Int64
	}
}

type exitWatch struct {
	crashID string // empty until the crash is stored
	start   uint64 // boottime ns
	// early is the exit code of a process that died before its crash was
	// stored (killed while frozen); run applies it.
	early *int
}

// maxExitWatches bounds crashes waiting for their exit status (a process
// whose exit is never seen must not grow the map forever).
const maxExitWatches = 4096

type session struct {
	pid    int
	start  uint64
	events chan bpf.Event
	// Crash-loop budget (loop.go): the loop, and whether this crash is
	// only counted.
	loopKey      string
	loopKind     report.Kind
	loopInterval time.Time
	suppressed   bool
	exe          string
	bin          *probes.Binary
}

// New makes a Capturer.
func New(k Kernel, bins Binaries, reports Reports, frozen FrozenRecords, cfg Config, stages []Stage, log *slog.Logger) *Capturer {
	return &Capturer{
		k: k, bins: bins, reports: reports, frozen: frozen, cfg: cfg, stages: stages,
		log:      log.With("component", "capture"),
		sessions: make(map[int]*session),
		exits:    make(map[int]*exitWatch),
		loops:    newLoopBudget(cfg.Loop),
	}
}

// Stats returns the counters.
func (c *Capturer) Stats() Stats {
	s := &c.stats
	return Stats{
		Crashes: s.crashes.Load(), FatalEvents: s.fatal.Load(), LateEvents: s.late.Load(),
		DeadlineHits: s.deadline.Load(), ResumeErrors: s.resumeErr.Load(), StoreErrors: s.storeErr.Load(),
		OrphansResumed: s.orphans.Load(), ExitsObserved: s.exits.Load(), LoopSuppressed: s.suppressed.Load(),
		ActiveFreezes: s.active.Load(), LastFreezeMicros: s.lastFreezeUS.Load(),
	}
}

// ticksPerSecond is USER_HZ, the unit of /proc/PID/stat starttime; the
// kernel fixes it at 100 for user space on every architecture.
const ticksPerSecond = 100

func startTicks(boottimeNS uint64) uint64 { return boottimeNS / (1e9 / ticksPerSecond) }

// ResumeLeftovers resumes every process a previous daemon recorded as
// frozen, marking it released first so its other threads do not stop it
// again. Run it at start-up, before attaching probes.
func (c *Capturer) ResumeLeftovers() error {
	// Records read are resumed even when others were malformed.
	frozen, listErr := c.frozen.List()
	for _, f := range frozen {
		id := procmem.Identity{PID: f.PID, StartTime: f.StartTime, PIDNS: f.PIDNS}
		if err := c.k.Release(uint32(f.PID), f.StartBoottimeNS); err != nil {
			c.log.Warn("mark leftover released", "pid", f.PID, "err", err)
		}
		if err := id.Resume(); err != nil {
			c.stats.resumeErr.Add(1)
			c.log.Error("resume leftover frozen process", "pid", f.PID, "err", err)
			continue
		}
		c.log.Warn("resumed process left frozen by a previous daemon", "pid", f.PID, "frozen_since", f.Since)
		c.stats.orphans.Add(1)
		if err := c.frozen.Remove(f.PID); err != nil {
			c.log.Warn("forget frozen record", "pid", f.PID, "err", err)
		}
	}
	if listErr != nil {
		return fmt.Errorf("read frozen records: %w", listErr)
	}
	return nil
}

// HandleEvent takes one fatal or exit event from the ring buffer.
func (c *Capturer) HandleEvent(ctx context.Context, ev bpf.Event) {
	switch ev.Type {
	case bpf.EventFatal:
		c.handleFatal(ctx, ev)
	case bpf.EventExit:
		c.handleExit(ev)
	}
}

func (c *Capturer) handleFatal(ctx context.Context, ev bpf.Event) {
	c.stats.fatal.Add(1)
	pid := int(ev.Pid)
	c.mu.Lock()
	// sig_ret 1: the BPF side saw the process released. A thread that the
	// group stop caught just before it reached fatal got there after
	// SIGCONT; it may well be the one the runtime prints, so it belongs in
	// the stored report (appended in ring order, before the exit status).
	// The exit watch is set before release, so it is always there.
	if ev.SigRet == 1 {
		if w, ok := c.exits[pid]; ok && w.start == ev.StartBoottime {
			c.mu.Unlock()
			c.stats.late.Add(1)
			c.appendLate(w.crashID, ev)
			return
		}
		if c.cfg.Freeze {
			c.mu.Unlock()
			c.stats.late.Add(1)
			return
		}
		// Observe-only mode: nothing is frozen, capture what we can.
	}
	defer c.mu.Unlock()
	if s, ok := c.sessions[pid]; ok && s.start == ev.StartBoottime {
		select {
		case s.events <- ev:
		default:
			c.stats.late.Add(1)
		}
		return
	}
	s := &session{pid: pid, start: ev.StartBoottime, events: make(chan bpf.Event, 256)}
	c.budget(s, &ev)
	s.events <- ev
	c.sessions[pid] = s
	if len(c.exits) >= maxExitWatches {
		for k := range c.exits { // drop an arbitrary old watch
			delete(c.exits, k)
			break
		}
	}
	c.exits[pid] = &exitWatch{start: s.start}
	c.wg.Add(1)
	c.stats.active.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.stats.active.Add(-1)
		c.run(ctx, s)
		c.mu.Lock()
		delete(c.sessions, pid)
		c.mu.Unlock()
	}()
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
		// Died while frozen (killed): the session stores it with the crash.
		w.early = &code
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

// appendLate adds an event that arrived after release to a stored crash.
func (c *Capturer) appendLate(crashID string, ev bpf.Event) {
	bin, _ := c.bins.Binary(uint32(ev.Cookie >> 32))
	var bias uint64
	if bin != nil && bin.PIE {
		bias, _ = procmem.LoadBias(int(ev.Pid), bin.Entry)
	}
	e := eventFromBPF(&ev, bin, bias, wallOffset())
	e.AfterRelease = true
	c.reports.Update(crashID, func(r *report.Crash) { r.Fatal.Events = append(r.Fatal.Events, e) })
}

// Wait blocks until every running session has resumed its process.
func (c *Capturer) Wait() { c.wg.Wait() }

// run is one freeze: gather, wait for stop, capture, store, release.
func (c *Capturer) run(ctx context.Context, s *session) {
	if s.suppressed {
		c.runSuppressed(s)
		return
	}
	t0 := time.Now()
	deadline := t0.Add(c.cfg.FreezeMax)
	id := procmem.Identity{PID: s.pid, StartTime: startTicks(s.start)}
	log := c.log.With("pid", s.pid)

	// Record the freeze durably first: if the daemon dies from here on, the
	// next one (or the unit's ExecStopPost) resumes the process.
	if err := c.frozen.Add(store.Frozen{PID: s.pid, StartTime: id.StartTime, StartBoottimeNS: s.start, Since: t0,
		PIDNS: c.cfg.PIDNamespace}); err != nil {
		c.stats.storeErr.Add(1)
		log.Error("record frozen process", "err", err)
	}

	var once sync.Once
	resumed := make(chan struct{})
	release := func(why string) {
		once.Do(func() {
			// RELEASED before SIGCONT: otherwise another thread entering
			// fatal after SIGCONT stops the process again, forever.
			if err := c.k.Release(uint32(s.pid), s.start); err != nil {
				log.Error("mark released", "err", err)
			}
			if err := id.Resume(); err != nil {
				c.stats.resumeErr.Add(1)
				log.Error("resume", "err", err)
			}
			if err := c.frozen.Remove(s.pid); err != nil {
				log.Warn("forget frozen record", "err", err)
			}
			c.stats.lastFreezeUS.Store(time.Since(t0).Microseconds())
			log.Debug("released", "why", why, "frozen", time.Since(t0))
			close(resumed)
		})
	}
	// The hard deadline holds even if a stage hangs.
	timer := time.AfterFunc(c.cfg.FreezeMax, func() {
		c.stats.deadline.Add(1)
		log.Warn("freeze deadline hit: resuming before capture finished", "max", c.cfg.FreezeMax)
		release("deadline")
	})
	defer timer.Stop()
	defer release("capture done")

	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	events := []bpf.Event{<-s.events}
	stopWait := c.cfg.StopWait
	waited, allStopped, waitErr := procmem.WaitStopped(s.pid, stopWait)
	if waitErr != nil {
		log.Warn("wait for threads to stop", "err", waitErr)
	}
	// Events already in the ring buffer may still be on their way: give
	// them a moment once the process cannot produce more.
	events = drain(events, s.events, 3*time.Millisecond)

	bin, owned, binErr := c.binary(s.pid, events[0])
	if owned {
		defer bin.Close() // inspected for this capture only
	}
	var bias uint64
	if bin != nil && bin.PIE {
		var biasErr error
		if bias, biasErr = procmem.LoadBias(s.pid, bin.Entry); biasErr != nil {
			binErr = errors.Join(binErr, fmt.Errorf("PIE load bias: %w", biasErr))
		}
	}
	crash := c.buildReport(s, id, events, t0, bin, bias)
	if binErr != nil {
		crash.Capture.Errors = append(crash.Capture.Errors, binErr.Error())
	}
	// Say why a process may not have been held: these are the first
	// questions when a crashed process exits while we think it frozen.
	if waitErr != nil {
		crash.Capture.Errors = append(crash.Capture.Errors, fmt.Sprintf("waiting for the threads to stop: %v", waitErr))
	}
	for _, ev := range events {
		if ev.SigRet < 0 {
			crash.Capture.Errors = append(crash.Capture.Errors,
				fmt.Sprintf("thread %d: the probe could not stop it (bpf_send_signal_thread: errno %d)", ev.Tid, -ev.SigRet))
		}
	}
	crash.Freeze.AllThreadsStopped = allStopped
	crash.Freeze.AllThreadsStoppedNS = waited.Nanoseconds()
	if !allStopped {
		crash.Capture.Errors = append(crash.Capture.Errors, fmt.Sprintf("not every thread stopped within %s", stopWait))
	}

	t := &Target{ID: id, Binary: bin, Events: events, Deadline: deadline, Bias: bias}
	mem, err := procmem.Open(s.pid, c.cfg.MaxBytes)
	if err != nil {
		// Gone already (killed while frozen): the message still comes
		// from the binary, where it is a constant.
		crash.Capture.Errors = append(crash.Capture.Errors, err.Error())
		mem = nil
	}
	c.fillMessage(crash, events, mem, bin, bias)
	if mem != nil {
		defer mem.Close()
		t.Mem = mem
		for _, st := range c.stages {
			if cctx.Err() != nil {
				crash.Capture.Missing = append(crash.Capture.Missing, st.Name())
				continue
			}
			began := time.Now()
			if err := guard(st.Name(), func() error { return st.Capture(cctx, t, crash) }); err != nil {
				crash.Capture.Errors = append(crash.Capture.Errors, fmt.Sprintf("%s: %v", st.Name(), err))
			}
			crash.Capture.Stages = append(crash.Capture.Stages, report.Stage{
				Name: st.Name(), StartNS: began.Sub(t0).Nanoseconds(), DurationNS: time.Since(began).Nanoseconds()})
		}
		crash.Capture.BytesRead, _ = mem.Stats()
	}
	if c.cfg.DebugHold > 0 {
		select {
		case <-time.After(c.cfg.DebugHold):
		case <-cctx.Done():
		}
	}
	crash.Capture.DurationNS = time.Since(t0).Nanoseconds()
	select {
	case <-resumed:
		crash.Freeze.DeadlineHit = true
	default:
	}

	// Still stopped? Only we should resume it. Another daemon probing the
	// same binary freezes it too and resumes it after its own capture —
	// reproduced: overlapping scopes are a configuration error.
	if allStopped && !crash.Freeze.DeadlineHit {
		if ok, err := procmem.AllStopped(s.pid); err != nil || !ok {
			crash.Capture.Errors = append(crash.Capture.Errors, "the process ran again before mapsentry released it: "+
				"something else resumed or killed it (another mapsentry daemon whose discovery scope covers this binary does that after its own capture)")
		}
	}

	// Handed over before release (a copy, no disk I/O: the publisher
	// stores or spools it off the freeze path).
	c.reports.Publish(crash)
	var early *int
	c.mu.Lock()
	if w, ok := c.exits[s.pid]; ok && w.start == s.start {
		w.crashID, early = crash.ID, w.early
		if early != nil {
			delete(c.exits, s.pid)
		}
	}
	c.mu.Unlock()
	if early != nil {
		setExit(&crash.Freeze, *early)
		crash.Capture.Errors = append(crash.Capture.Errors, "the process died while frozen (killed, or resumed by someone else)")
	}

	release("capture done")
	crash.Freeze.Resumed = true
	crash.Freeze.FrozenNS = time.Since(t0).Nanoseconds()
	// Work that needs only the binary runs after the process was resumed.
	for _, st := range c.stages {
		if f, ok := st.(Finisher); ok {
			if err := guard(st.Name(), func() error { return f.Finish(t, crash) }); err != nil {
				crash.Capture.Errors = append(crash.Capture.Errors, fmt.Sprintf("%s: %v", st.Name(), err))
			}
		}
	}
	// Published again: what arrived meanwhile (the exit status, late
	// events) is kept (store.Merge).
	c.reports.Publish(crash)
	c.stats.crashes.Add(1)
	if c.loops != nil {
		c.loops.remember(s.loopKey, crash)
	}
	log.Info("crash captured", "crash", crash.ID, "kind", crash.Fatal.Kind, "message", crash.Fatal.Message,
		"events", len(events), "frozen", time.Duration(crash.Freeze.FrozenNS))
	if c.OnStored != nil {
		c.OnStored(crash, true)
	}
}

// guard runs one stage, turning a panic into an error: a decoder that
// trips over another process's memory must cost that stage, not the daemon
// (and with it every other freeze it holds).
func guard(stage string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("stage %s panicked: %v", stage, r)
		}
	}()
	return fn()
}

func drain(events []bpf.Event, ch chan bpf.Event, settle time.Duration) []bpf.Event {
	t := time.NewTimer(settle)
	defer t.Stop()
	for {
		select {
		case ev := <-ch:
			events = append(events, ev)
		case <-t.C:
			sort.Slice(events, func(i, j int) bool { return events[i].Ktime < events[j].Ktime })
			return events
		}
	}
}

// probeName names the function a probe kind is attached to.
func probeName(kind uint32) string {
	switch kind {
	case bpf.ProbeRuntimeFatal:
		return "runtime.fatal"
	case bpf.ProbeRuntimeThrow:
		return "runtime.throw"
	case bpf.ProbeMapsFatal:
		return "internal/runtime/maps.fatal"
	case bpf.ProbeFatalPanic:
		return "runtime.fatalpanic"
	}
	return fmt.Sprintf("probe kind %d", kind)
}

// buildReport fills the process identity and the events.
func (c *Capturer) buildReport(s *session, id procmem.Identity, events []bpf.Event, t0 time.Time, bin *probes.Binary, bias uint64) *report.Crash {
	cr := &report.Crash{
		Schema: report.Schema, ID: report.NewID(t0), Host: c.cfg.Host, CapturedAt: t0.UTC(),
		Process: report.Process{PID: s.pid, StartTime: id.StartTime},
	}
	proc := "/proc/" + strconv.Itoa(s.pid)
	if exe, err := os.Readlink(proc + "/exe"); err == nil {
		cr.Process.Exe = strings.TrimSuffix(exe, " (deleted)")
	} else {
		cr.Capture.Errors = append(cr.Capture.Errors, fmt.Sprintf("read exe: %v", err))
	}
	if c.cfg.IncludeCmdline {
		if b, err := readBounded(proc+"/cmdline", 64<<10); err == nil {
			cr.Process.Cmdline = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
	}
	// The container's view: its own PID, cgroup, unit or container id.
	ct := probes.ContainerOf("/proc", s.pid)
	cr.Process.NSPID, cr.Process.Cgroup, cr.Process.Unit, cr.Process.Container = ct.NSPID, ct.Cgroup, ct.Unit, ct.ID
	if bin != nil {
		cr.Process.GoVersion = bin.GoVersion
		cr.Process.MapLayout = bin.MapLayout
		cr.Process.Stripped = bin.Stripped
		cr.Process.BuildID = bin.BuildID
	}
	wallOff := wallOffset()
	for i := range events {
		cr.Fatal.Events = append(cr.Fatal.Events, eventFromBPF(&events[i], bin, bias, wallOff))
	}
	return cr
}

// eventFromBPF converts a ring-buffer event; bin may be nil. bias is the
// PIE load bias.
func eventFromBPF(ev *bpf.Event, bin *probes.Binary, bias uint64, wallOff int64) report.Event {
	e := report.Event{
		TID: int(ev.Tid), Goid: ev.Goid, KTimeNS: ev.Ktime,
		WallTime: time.Unix(0, int64(ev.Ktime)+wallOff).UTC(),
		Function: probeName(ev.Probe), Caller: ev.RetAddr,
		Stack: bpf.StackPCs(ev),
	}
	if ev.GoidErr != 0 {
		e.Goid = -1
	}
	if len(e.Stack) > 0 {
		e.PC = e.Stack[0]
	}
	if bin != nil && ev.RetAddr != 0 {
		e.CallerFunction = bin.FuncName(ev.RetAddr - 1 - bias)
	}
	if ev.Probe != bpf.ProbeFatalPanic {
		e.Message = bpf.Message(ev)
	}
	return e
}

// binary is the crashed process's binary: the watched one named by the
// event's cookie, or — when discovery detached it meanwhile — the frozen
// process's executable inspected afresh.
// owned says the caller must close it.
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

// maxMessage bounds a fatal message re-read from memory.
const maxMessage = 4096

// fillMessage sets the fatal message and kind. The BPF copy holds the first
// 128 bytes; longer messages are re-read from the frozen process. For an
// unrecovered panic the message is the panic value when it is a string.
func (c *Capturer) fillMessage(cr *report.Crash, events []bpf.Event, mem *procmem.Reader, bin *probes.Binary, bias uint64) {
	// Prefer the map/fatal event over a nested throw: the first in time.
	ev := events[0]
	fn := probeName(ev.Probe)
	if fn == "internal/runtime/maps.fatal" {
		fn = "runtime.fatal"
	}
	var msg string
	if ev.Probe == bpf.ProbeFatalPanic {
		msg = "panic"
		if bin != nil && bin.Layout != nil && mem != nil {
			msg = panicMessage(mem, ev.MsgPtr, bin.Layout.PanicArg)
		}
	} else {
		var err error
		if msg, err = readMessage(&ev, mem, bin, bias); err != nil {
			cr.Capture.Errors = append(cr.Capture.Errors, err.Error())
		}
	}
	cr.Fatal.Message = msg
	cr.Fatal.Kind = report.Classify(msg, fn)
	// Events whose BPF copy failed get theirs from memory too.
	for i := range cr.Fatal.Events {
		if i < len(events) && cr.Fatal.Events[i].Message == "" && events[i].Probe != bpf.ProbeFatalPanic {
			cr.Fatal.Events[i].Message, _ = readMessage(&events[i], mem, bin, bias)
		}
	}
}

// readMessage returns a fatal event's message: the BPF copy when it is
// whole (the probe cannot fault in a page not yet mapped), else read from
// the frozen process, else from the binary — the runtime's fatal messages
// are string constants — at the link address (bounded).
func readMessage(ev *bpf.Event, mem *procmem.Reader, bin *probes.Binary, bias uint64) (string, error) {
	if m := bpf.Message(ev); m != "" && ev.MsgLen <= uint64(len(ev.Msg)) {
		return m, nil
	}
	n := ev.MsgLen
	if n > maxMessage {
		n = maxMessage
	}
	buf := make([]byte, n)
	err := errors.New("process memory not readable")
	if mem != nil {
		if _, err = mem.ReadAt(buf, ev.MsgPtr); err == nil {
			return strings.ToValidUTF8(string(buf), "?"), nil
		}
	}
	if bin != nil && bin.Table != nil && ev.MsgPtr >= bias && n > 0 {
		if _, ferr := bin.Table.ReadStatic(buf, ev.MsgPtr-bias); ferr == nil {
			return strings.ToValidUTF8(string(buf), "?"), nil
		}
	}
	return bpf.Message(ev), fmt.Errorf("read fatal message: %w", err)
}

// panicMessage reads the value of an unrecovered panic: fatalpanic's
// argument is *runtime._panic, whose arg is an eface at argOff. A string
// value is read; anything else is named as such.
func panicMessage(mem *procmem.Reader, p uint64, argOff goruntime.Offset) string {
	var hdr [16]byte
	if p == 0 || !argOff.Known() {
		return "panic"
	}
	if _, err := mem.ReadAt(hdr[:], p+uint64(argOff)); err != nil {
		return "panic"
	}
	typ := le64(hdr[0:])
	data := le64(hdr[8:])
	if typ == 0 || data == 0 {
		return "panic: nil"
	}
	// abi.Type.Kind_ at +23; kind String = 24.
	var kind [1]byte
	if _, err := mem.ReadAt(kind[:], typ+23); err != nil || kind[0]&0x1f != 24 {
		return "panic: (non-string value)"
	}
	var sh [16]byte
	if _, err := mem.ReadAt(sh[:], data); err != nil {
		return "panic"
	}
	ptr, n := le64(sh[:]), le64(sh[8:])
	if n > maxMessage {
		n = maxMessage
	}
	buf := make([]byte, n)
	if _, err := mem.ReadAt(buf, ptr); err != nil {
		return "panic"
	}
	return "panic: " + strings.ToValidUTF8(string(buf), "?")
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// wallOffset converts CLOCK_MONOTONIC (bpf_ktime_get_ns) to wall-clock ns.
func wallOffset() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Now().UnixNano() - ts.Nano()
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, max)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return nil, err
	}
	return buf[:n], nil
}

// ResumeOrphans resumes processes the BPF side froze that no session owns
// (a stop that outlived its session by more than twice the freeze limit).
// Cheap; run it periodically.
func (c *Capturer) ResumeOrphans() {
	states, err := c.k.StopStates()
	if err != nil {
		return
	}
	var now unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
	for pid, st := range states {
		if st.State != bpf.StopFreezing || uint64(now.Nano())-st.FirstKtime < uint64(2*c.cfg.FreezeMax) {
			continue
		}
		c.mu.Lock()
		_, active := c.sessions[int(pid)]
		c.mu.Unlock()
		if active {
			continue
		}
		if err := c.k.Release(pid, st.StartBoottime); err != nil {
			continue
		}
		id := procmem.Identity{PID: int(pid), StartTime: startTicks(st.StartBoottime)}
		if err := id.Resume(); err != nil && !errors.Is(err, procmem.ErrGone) {
			c.stats.resumeErr.Add(1)
			continue
		}
		c.stats.orphans.Add(1)
		c.log.Warn("resumed a process frozen without a capture session", "pid", pid)
	}
}
