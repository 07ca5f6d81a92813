package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/daemon/api"
	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/daemon/internal/capture"
	"github.com/mapsentry/mapsentry/daemon/internal/publish"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/exporter"
	"github.com/mapsentry/mapsentry/internal/tracehold"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/report"
)

// Daemon is one running mapsentry daemon.
type Daemon struct {
	cfg     config.Config
	version string
	log     *slog.Logger
	started time.Time

	kernel *bpf.Kernel
	// pub takes finished reports to the store, the spool or memory, and
	// owns the store handle (which may be unavailable: degraded).
	pub *publish.Publisher
	// frozen are the records of held processes (runtime_dir/frozen).
	frozen  *store.FrozenRecords
	probes  *probes.Manager
	capture *capture.Capturer
	metrics *exporter.Metrics
	// gc defers garbage collection while a process is held (gcpause.go).
	gc *gcPause
	// strays is how many processes the start-up sweep resumed; leftovers
	// how many a previous daemon's records named.
	strays, leftovers int
	checks            []Check // start-up checks (preflight.go)
	// mapops is the map-op flight recorder (mapops.go); nil when it
	// failed to load (mapopsErr says why).
	mapops    *bpf.MapOps
	mapopsErr string

	// events counts crash-ring records: handled trails read while one is
	// being dispatched (a stop waits for them to meet); execRead the
	// exec ring's.
	events struct{ read, handled, execRead, malformed, unknown atomic.Uint64 }
	// lost is the kernel's lost-event counters last copied to metrics
	// (owned by pulse); otherNS the crash hits outside the PID
	// namespace last logged.
	lost  struct{ crash, exit, exec, otherNS uint64 }
	scope Scope
	// loop tells a wedged event loop from an idle one (liveness.go).
	loop loopCheck
	// discErrors are the discovery error counts last exported, by reason.
	discErrors map[string]uint64
}

// EventStats counts ring-buffer records.
type EventStats = apitype.EventStats

// Status is what /v1/status answers.
type Status = apitype.Status

// Run runs the daemon until ctx ends. Every process it froze is resumed
// before it returns.
func Run(ctx context.Context, cfg config.Config, version string, log *slog.Logger) (err error) {
	d := &Daemon{cfg: cfg, version: version, log: log, started: time.Now()}
	var cl cleanups
	defer func() { err = errors.Join(err, cl.run()) }()
	if err := d.prepare(&cl); err != nil {
		return err
	}
	if err := d.loadKernel(&cl); err != nil {
		return err
	}
	// After the partner and flight-recorder stages: it reads their partners.
	diagnose := capture.NewDiagnoseStage()
	cl.add(diagnose.Close)
	d.newDiscovery()
	d.newCapture(diagnose)
	// Before any probe exists: resume what a previous daemon left
	// stopped, recorded or not.
	d.resumeLeftovers()
	d.strays = d.resumeStrays(probes.Scope{Include: scopeInclude(cfg), Exclude: cfg.Discovery.Exclude})
	rd, execRd, err := d.openRings(&cl)
	if err != nil {
		return err
	}
	srv, ln, exp, err := d.newAPI(ctx, &cl)
	if err != nil {
		return err
	}
	d.startPublisher(ctx, &cl)
	return d.serve(ctx, rd, execRd, srv, ln, exp)
}

// cleanups are what Run undoes when it returns, last done first undone.
type cleanups []func() error

func (c *cleanups) add(f func() error) { *c = append(*c, f) }

func (c cleanups) run() error {
	var errs []error
	for i := len(c) - 1; i >= 0; i-- {
		errs = append(errs, c[i]())
	}
	return errors.Join(errs...)
}

// prepare does what comes before BPF: the start-up checks, the daemon's
// priority, the one-daemon lock, the frozen records and the publisher.
func (d *Daemon) prepare(cl *cleanups) (err error) {
	cfg, log := d.cfg, d.log
	if d.checks, err = startupChecks(cfg, log); err != nil {
		return err
	}
	setProcs()
	if c := setNice(cfg.Freeze.Nice); !c.OK {
		log.Warn("daemon priority not raised", "detail", c.Detail)
		d.checks = append(d.checks, c)
	}
	// One daemon per instance and per directory, taken before anything a
	// running daemon could be using is touched: its frozen records (a
	// second daemon would resume processes the first holds mid-capture),
	// its spool, its store.
	lock, err := d.lock()
	if err != nil {
		return err
	}
	cl.add(lock.Close)
	// Frozen records and the publisher need no store: a store that cannot
	// be opened (full or read-only disk, corrupt file) leaves the daemon
	// running degraded, its reports spooled, never exiting before it has
	// resumed what a previous daemon left stopped.
	if d.frozen, err = store.OpenFrozenRecords(cfg.FrozenDir()); err != nil {
		log.Error("frozen-process records unavailable: a daemon killed while holding a process leaves it to the start-up sweep",
			"err", err)
	}
	d.pub = publish.New(publishConfig(cfg), log)
	return nil
}

// loadKernel loads the BPF side and the map-op flight recorder, and learns
// which PID namespace the daemon watches.
func (d *Daemon) loadKernel(cl *cleanups) (err error) {
	cfg := d.cfg
	if d.kernel, err = bpf.Load(bpf.Options{Freeze: cfg.Freeze.Enabled, RingBytes: uint32(cfg.Capture.RingBufferBytes),
		ExecRingBytes: uint32(cfg.Discovery.ExecRingBufferBytes), KnownExes: knownExes(cfg.Discovery.MaxBinaries)}); err != nil {
		return fmt.Errorf("load BPF (needs CAP_BPF and CAP_PERFMON, a kernel with BTF and ring buffers): %w", err)
	}
	cl.add(d.kernel.Close)
	d.scope = scopeOf(d.kernel.PIDNamespace())
	if !d.scope.Host {
		d.log.Warn("running in a child PID namespace: watching its processes only", "pid_namespace", d.scope.PIDNamespace,
			"scope", d.scope.Description)
	}
	d.loadMapOps()
	cl.add(d.closeMapOps)
	return nil
}

// newDiscovery makes the probes manager (not started: serve runs it).
func (d *Daemon) newDiscovery() {
	cfg := d.cfg
	pcfg := probes.Config{
		Scope:       probes.Scope{Include: scopeInclude(cfg), Exclude: cfg.Discovery.Exclude},
		Rescan:      cfg.Discovery.Rescan,
		MaxBinaries: cfg.Discovery.MaxBinaries,
		Workers:     cfg.Discovery.Workers,
		Gate:        probes.GateConfig{Enabled: cfg.Discovery.ExecGate.Enabled, Deadline: cfg.Discovery.ExecGate.Deadline},
	}
	d.mapOpsProbes(&pcfg)
	d.probes = probes.NewManager(d.kernel, pcfg, d.log)
}

// openRings attaches the tracepoints and opens the crash and exec ring
// buffers; the crash reader is what the liveness check kicks.
func (d *Daemon) openRings(cl *cleanups) (rd, execRd *ringbuf.Reader, err error) {
	if err := d.kernel.AttachTracepoints(); err != nil {
		return nil, nil, err
	}
	if rd, err = d.kernel.Events(); err != nil {
		return nil, nil, err
	}
	cl.add(rd.Close) // serve closes it first, after the drain; again is a no-op
	if execRd, err = d.kernel.ExecEvents(); err != nil {
		return nil, nil, err
	}
	cl.add(execRd.Close)
	d.loop.kick = rd.Flush
	d.loop.turned()
	return rd, execRd, nil
}

// newAPI makes the socket's server with its routes and policy, the
// metrics, and the OTLP exporter (nil when export is off), wires the
// capture's and publisher's callbacks to them, and listens.
func (d *Daemon) newAPI(ctx context.Context, cl *cleanups) (*api.Server, net.Listener, *exporter.Exporter, error) {
	cfg := d.cfg
	srv := api.New(cfg.Socket, d, d.log)
	srv.HandleLive(d.newLive(ctx)) // POST /v1/decode, /v1/dump: write routes
	srv.HandleMapOps(d)            // GET /v1/mapops; POST /v1/mapops/arm, /disarm: write routes
	if err := apiPolicy(cfg, srv); err != nil {
		return nil, nil, nil, err
	}
	metrics, err := d.newMetrics(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("metrics: %w", err)
	}
	d.metrics = metrics
	cl.add(func() error { metrics.Shutdown(context.WithoutCancel(ctx)); return nil })
	srv.Handle("GET /metrics", metrics.Handler())
	exp, err := d.newExporter(ctx, metrics, d.log)
	if err != nil {
		return nil, nil, nil, err
	}
	d.capture.OnStored = onStored(metrics)
	if exp != nil {
		d.pub.OnStored = func(string) { exp.Notify() }
	}
	d.capture.Loops = d.pub
	d.capture.OnSuppressed = func(l store.LoopSummary) { metrics.CrashSuppressed(l.Kind, l.Exe, l.Signature) }
	ln, err := srv.Listen()
	if err != nil {
		return nil, nil, nil, err
	}
	return srv, ln, exp, nil
}

// startPublisher opens the store in the background: after the leftovers
// were resumed, and never holding up start-up. The publisher outlives the
// capture sessions (their last reports), so it has its own context,
// ended when Run returns.
func (d *Daemon) startPublisher(ctx context.Context, cl *cleanups) {
	pubCtx, pubStop := context.WithCancel(context.WithoutCancel(ctx))
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); _ = d.pub.Run(pubCtx) }()
	cl.add(func() error { pubStop(); <-pubDone; return nil })
}

// knownExes sizes the BPF exec filter: every probed binary and as many
// other files again, at least 16384 (a few MB of kernel memory).
func knownExes(maxBinaries int) uint32 {
	return uint32(max(16384, 2*maxBinaries))
}

// newCapture makes the capturer: reports go to the publisher, SIGSTOP
// holds are recorded in the frozen records; diagnose runs after the
// partner and flight-recorder stages (it reads their partners).
func (d *Daemon) newCapture(diagnose *capture.DiagnoseStage) {
	cfg := d.cfg
	host, _ := os.Hostname()
	d.gc = newGCPause()
	d.capture = capture.New(d.kernel, d.probes, d.pub, d.frozen, capture.Config{
		Freeze: cfg.Freeze.Enabled, FreezeMax: cfg.Freeze.Max, StopWait: min(cfg.Freeze.StopWait, cfg.Freeze.Max),
		Boost: cfg.Freeze.Nice, RealTime: cfg.Freeze.RealTime,
		MaxBytes: cfg.Capture.MaxBytes, DebugHold: cfg.Capture.DebugHold, IncludeCmdline: cfg.Report.Cmdline, Host: host,
		Workers: cfg.Capture.Workers, Sessions: cfg.Capture.Sessions,
		PIDNamespace: d.scope.PIDNamespace,
		Loop:         capture.LoopBudget{MaxFull: cfg.Capture.Loop.MaxFull, Interval: cfg.Capture.Loop.Interval},
		OnHolding:    d.gc.set,
	}, append(capture.DefaultStages(cfg.Report.Values, coreStage(cfg)), d.flightRecorderStage(), diagnose), d.log)
}

// serve runs every component until ctx ends or one fails, then stops in
// the order that strands no process (stopHolding).
func (d *Daemon) serve(ctx context.Context, rd, execRd *ringbuf.Reader, srv *api.Server, ln net.Listener, exp *exporter.Exporter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	if exp != nil {
		// Crashes already stored but not exported (a previous run, a
		// receiver that was down) go out first.
		wg.Add(1)
		go func() { defer wg.Done(); errc <- exp.Run(ctx) }()
	}
	// The reader and the heartbeat outlive ctx: a stop drains the ring
	// buffer before it closes the reader (stopHolding).
	hbCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	var readers sync.WaitGroup
	readers.Add(2)
	// Joined too: the deferred closes must not pull the BPF maps from
	// under a last counter read (found by the race detector).
	go func() { defer readers.Done(); d.pulse(hbCtx, ctx, execRd) }()
	go func() { defer readers.Done(); d.readEvents(hbCtx, rd) }()
	wg.Add(4)
	go func() { defer wg.Done(); d.readExecEvents(ctx, execRd) }()
	go func() { defer wg.Done(); errc <- d.probes.Run(ctx) }()
	go func() { defer wg.Done(); errc <- srv.Run(ctx, ln) }()
	go func() { defer wg.Done(); d.serveSystemd(ctx) }() // READY=1, status text, watchdog
	wg.Add(2)
	go func() { defer wg.Done(); d.trimAfterStart(ctx) }()
	go func() { defer wg.Done(); d.gc.Run(ctx) }()
	d.log.Info("mapsentry daemon running", "version", d.version, "instance", d.cfg.Instance, "socket", d.cfg.Socket,
		"state_dir", d.cfg.StateDir, "freeze", d.cfg.Freeze.Enabled, "hold", d.cfg.Freeze.Hold,
		"include", d.cfg.Discovery.Include, "exclude", d.cfg.Discovery.Exclude,
		"pid_namespace", d.scope.PIDNamespace, "host", d.scope.Host)

	var firstErr error
	select {
	case <-ctx.Done():
	case firstErr = <-errc:
	}
	// Stop holding first, drain, release everything, then the rest.
	stopHeartbeat()
	d.stopHolding(rd)
	cancel()
	rd.Close()     // unblocks readEvents
	execRd.Close() // and readExecEvents
	readers.Wait()
	wg.Wait()
	// What this run took on and what became of it: at a stop every
	// crash taken on has its report (or was counted by the loop budget)
	// and none it held was let go uncaptured, or this line says otherwise.
	st := d.capture.Stats()
	d.log.Info("mapsentry daemon stopped", "fatal_events", st.FatalEvents, "sessions", st.Sessions,
		"captured", st.Crashes, "loop_suppressed", st.LoopSuppressed, "dropped", st.Dropped, "dropped_held", st.DroppedHeld,
		"store_errors", st.StoreErrors, "resume_errors", st.ResumeErrors)
	return firstErr
}

// readExecEvents hands exec-ring records to discovery until ctx ends. It
// blocks until the kernel wakes it (the ring an eighth full, or an event
// sent with a wake-up) or the pulse flushes it (events sent without one).
func (d *Daemon) readExecEvents(ctx context.Context, rd *ringbuf.Reader) {
	var rec ringbuf.Record
	for ctx.Err() == nil {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrFlushed) {
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			d.log.Warn("read exec ring buffer", "err", err)
			continue
		}
		d.events.execRead.Add(1)
		ev, err := bpf.ParseExecEvent(rec.RawSample)
		if err != nil || ev.Type != bpf.EventExec {
			d.events.malformed.Add(1)
			continue
		}
		d.probes.OnExec(probes.Exec{PID: int(ev.Pid), Flags: ev.Flags, Exe: ev.Exe})
	}
}

// readEvents dispatches crash-ring records until the reader is closed or
// ctx (the reader's own, which outlives the daemon's: a stop drains the
// ring first) ends.
func (d *Daemon) readEvents(ctx context.Context, rd *ringbuf.Reader) {
	var rec ringbuf.Record
	d.realTimeReader()
	// The test-only wedge is a point in time, not a timer channel: the
	// reader's deadline and a timer are separate runtime timers, and a
	// deadline that fired first would leave the loop reading for good
	// with the wedge not yet seen.
	var wedgeAt time.Time
	if after := d.cfg.Capture.DebugBlockEventsAfter; after > 0 {
		wedgeAt = time.Now().Add(after)
		// Turn then, event or not (nothing else kicks the reader of a
		// daemon not under systemd).
		rd.SetDeadline(wedgeAt)
	}
	for {
		d.loop.turned()
		if !wedgeAt.IsZero() && !time.Now().Before(wedgeAt) {
			d.log.Warn("capture.debug_block_events_after: the event loop blocks for good now (test only)")
			<-ctx.Done()
			return
		}
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrFlushed) {
				continue // a kick (loopCheck): turn
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // the wedge's: turn
			}
			if errors.Is(err, ringbuf.ErrClosed) || ctx.Err() != nil {
				return
			}
			d.log.Warn("read ring buffer", "err", err)
			continue
		}
		d.events.read.Add(1)
		d.dispatch(rec.RawSample)
		d.events.handled.Add(1)
	}
}

// realTimeReader runs the calling goroutine, the crash-event reader, on
// a thread of its own under SCHED_FIFO at freeze.realtime: the first step
// of every hold is reading its event, and a thread at nice -20 woke up to
// 20-85 ms late behind a crash storm's spinning victims (perf sched: a
// nice value is a weight, not a latency), a real-time one at once. It
// only reads, dispatches and blocks again (bounded work per event, no
// polling). The thread stays locked: it ends with the goroutine rather
// than run other goroutines real-time.
func (d *Daemon) realTimeReader() {
	// Never restored: the reader keeps its thread until it returns.
	if _, err := tracehold.RealTime(d.cfg.Freeze.RealTime); err != nil {
		d.log.Warn("the crash-event reader runs without real-time priority: in a crash storm holds start later "+
			"(needs CAP_SYS_NICE, and no RestrictRealtime= in the unit)", "freeze.realtime", d.cfg.Freeze.RealTime, "err", err)
	}
}

func (d *Daemon) dispatch(raw []byte) {
	ev, err := bpf.ParseEvent(raw)
	if err != nil {
		d.events.malformed.Add(1)
		return
	}
	switch ev.Type {
	case bpf.EventFatal, bpf.EventExit:
		d.capture.HandleEvent(ev)
	default:
		d.events.unknown.Add(1)
	}
}

// coreStage is the core writer when capture.core.enabled, else nil.
func coreStage(cfg config.Config) *capture.CoreStage {
	if !cfg.Capture.Core.Enabled {
		return nil
	}
	return &capture.CoreStage{Dir: filepath.Join(cfg.StateDir, "cores"),
		MaxBytes: cfg.Capture.Core.MaxBytes, Keep: cfg.Capture.Core.Keep}
}

// updateGauges copies discovery and kernel counters into the metrics.
func (d *Daemon) updateGauges() {
	if d.metrics == nil {
		return
	}
	st := d.probes.Stats()
	d.metrics.SetBinariesWatched(st.BinariesWatched)
	d.metrics.SetProbesAttached(st.ProbesAttached)
	if d.discErrors == nil {
		d.discErrors = map[string]uint64{}
	}
	for reason, n := range st.Errors {
		if n > d.discErrors[reason] {
			d.metrics.AddDiscoveryErrors(reason, n-d.discErrors[reason])
			d.discErrors[reason] = n
		}
	}
	kc, err := d.kernel.Counters()
	if err != nil {
		return
	}
	for _, l := range []struct {
		kind, why, hint string
		total           uint64
		last            *uint64
	}{
		{"crash", "crash ring buffer full: crash events lost; those threads were not frozen and died uncaptured",
			"raise capture.ring_buffer_bytes", kc.RingbufFull, &d.lost.crash},
		{"exit", "crash ring buffer full: exit events of crashed processes lost; their reports lack the exit status",
			"raise capture.ring_buffer_bytes", kc.ExitLost, &d.lost.exit},
		{"exec", "exec ring buffer full: exec events lost; a /proc scan now finds those processes",
			"raise discovery.exec_ring_buffer_bytes", kc.ExecLost, &d.lost.exec},
	} {
		if n := l.total - *l.last; n > 0 {
			d.metrics.AddEventsLost(l.kind, n)
			*l.last = l.total
			d.log.Warn(l.why, "lost", n, "total", l.total, "hint", l.hint)
			if l.kind == "exec" {
				d.probes.ScanSoon() // those processes, now rather than at the next rescan
			}
		}
	}
	if n := kc.OtherNamespace - d.lost.otherNS; n > 0 {
		d.lost.otherNS = kc.OtherNamespace
		d.log.Warn("a watched binary crashed in a process outside this daemon's PID namespace: not held, not captured",
			"hits", n, "total", kc.OtherNamespace, "pid_namespace", d.scope.PIDNamespace,
			"hint", "run a daemon in that namespace, or one on the host")
	}
}

// ExportStatus describes the OTLP exporter in /v1/status.
type ExportStatus = apitype.ExportStatus

// refreshWait bounds how long a listing waits for discovery's scan of
// /proc; past it the listing is as of the last scan.
const refreshWait = 2 * time.Second

// refreshProcesses brings discovery's process lists up to date for a
// listing (execs of settled files send no event; the periodic rescan is
// a backstop).
func (d *Daemon) refreshProcesses() {
	ctx, cancel := context.WithTimeout(context.Background(), refreshWait)
	defer cancel()
	d.probes.Refresh(ctx)
}

// Status implements api.Backend.
func (d *Daemon) Status() Status {
	d.refreshProcesses()
	n, _ := d.pub.CountCrashes()
	kc, _ := d.kernel.Counters()
	st := Status{
		Version: d.version, PID: os.Getpid(), StartedAt: d.started, Socket: d.cfg.Socket,
		StateDir: d.cfg.StateDir, Instance: d.cfg.Instance, Freeze: d.cfg.Freeze.Enabled, Crashes: n, Store: d.pub.Stats(),
		Discovery: d.probes.Stats(), Capture: d.capture.Stats(), Kernel: kc,
		Events: EventStats{Read: d.events.read.Load(), ExecRead: d.events.execRead.Load(), Malformed: d.events.malformed.Load(), Unknown: d.events.unknown.Load()},
		Checks: d.checks, StraysResumed: d.strays, LeftoversResumed: d.leftovers, Scope: d.scope,
	}
	if d.cfg.Export.Enabled {
		n, _ := d.pub.ExportQueue().Len(context.Background())
		st.Export = &ExportStatus{Protocol: d.cfg.Export.OTLP.Protocol, Endpoint: d.cfg.Export.OTLP.Endpoint, Pending: n}
	}
	return st
}

// Binaries implements api.Backend.
func (d *Daemon) Binaries() []apitype.Binary {
	d.refreshProcesses()
	return d.probes.Binaries()
}

// Crashes implements api.Backend.
func (d *Daemon) Crashes(limit int) ([]report.Crash, error) { return d.pub.Crashes(limit) }

// Crash implements api.Backend.
func (d *Daemon) Crash(id string) (*report.Crash, error) { return d.pub.Crash(id) }
