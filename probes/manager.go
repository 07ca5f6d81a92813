package probes

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

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// Kernel is what the manager needs of the loaded BPF objects.
type Kernel interface {
	CrashProgram() *ebpf.Program
	CrashMultiProgram() (*ebpf.Program, error)
	SetBinary(id uint32, cfg bpf.BinConfig) error
	DeleteBinary(id uint32) error
}

// Defaults of Config.
const (
	// DefaultMaxBinaries: a fleet host runs tens to a few hundred distinct
	// Go binaries; a probed binary costs a few KiB here and its uprobes
	// nothing while no process maps it.
	DefaultMaxBinaries = 4096
	DefaultWorkers     = 4
	// DefaultRescan: the scan of /proc is a backstop (exec events and the
	// exec gate find new processes, a lost event asks for a scan at once)
	// that keeps process lists and rewritten binaries current; on an idle
	// host it is most of what the daemon does (docs/discovery.md).
	DefaultRescan = 30 * time.Second
)

// Config configures discovery.
type Config struct {
	Scope Scope
	// Rescan is how often /proc is scanned again: processes whose exec
	// was missed, exited processes, and binaries rewritten or deleted.
	Rescan   time.Duration
	ProcRoot string // "/proc"
	// MaxBinaries caps the binaries kept probed. Probes live as long as
	// the binary (uprobes belong to the inode and cost nothing when no
	// process maps it), so a binary run every minute from cron is never
	// inspected twice; past the cap the binary run least recently by no
	// live process is detached.
	MaxBinaries int
	// Workers bounds how many binaries are inspected and attached at once.
	Workers int
	// Gate holds every exec on the host until its binary is classified
	// and probed (gate.go).
	Gate GateConfig
	// MapOps is the map-op flight recorder program; nil: map-op probes
	// cannot be armed.
	MapOps MapOpsKernel
	// MapOpsAlways are executable globs whose processes always get map-op
	// probes (`mapops.mode: always`).
	MapOpsAlways []string
}

// Stats are discovery counters, reported by `mapsentry status`.
type Stats = apitype.DiscoveryStats

// BinaryStatus is one line of `mapsentry ps`.
type BinaryStatus = apitype.Binary

type watched struct {
	id    uint32
	bin   *Binary
	links []link.Link
	pids  map[int]procmem.Identity
	err   string
	// attached is how many crash functions have a probe (one uprobe_multi
	// link covers them all).
	attached    int
	lastRun     time.Time
	foundBy     string
	probedAfter time.Duration
	// borrows counts live operations using bin (Borrow); detached says
	// its probes are gone, so the last borrower closes bin. Both under
	// m.mu.
	borrows  int
	detached bool
	// forgotten: forget ran and detach has not finished (its probes may
	// still be in the kernel; Manager.detaching counts it). Under m.mu.
	forgotten bool
}

// errNoExe: a process without an executable (a kernel thread).
var errNoExe = errors.New("no executable")

// identityEvery: every how many periodic scans known processes'
// identities are checked (PID reuse without an exec event): every 2
// minutes at the default rescan. A Refresh always checks.
const identityEvery = 4

// maxRejected bounds the cache of non-Go and out-of-scope executables.
const maxRejected = 1 << 16

// flight is one binary being inspected: later sightings of the same file
// wait for it instead of reading it again.
type flight struct{ done chan struct{} }

// Manager discovers Go processes and keeps crash probes attached to the
// binaries they run.
type Manager struct {
	k    Kernel
	cfg  Config
	log  *slog.Logger
	self FileKey
	exec chan Exec
	// scanSoon asks the event loop for a scan before the next rescan
	// (ScanSoon): exec events were lost.
	scanSoon chan struct{}
	// refresh asks the event loop for a scan and is answered by closing
	// the channel sent (Refresh); lastScan is when the last scan ended,
	// touched only by the goroutine scanning.
	refresh  chan chan struct{}
	lastScan time.Time
	q        *workQueue
	// refineQ feeds the one goroutine applying binaries' DWARF;
	// refining counts those queued or being applied.
	refineQ  chan *watched
	refining atomic.Int64
	// gate is set once Run opened it (nil when off or unavailable).
	gate atomic.Pointer[gate]

	mu   sync.Mutex
	bins map[FileKey]*watched
	byID map[uint32]*watched
	// ids mirrors byID for Binary, which capture calls while a process is
	// frozen: it must never wait behind m.mu.
	idMu sync.RWMutex
	ids  map[uint32]*Binary
	// Exec counters are atomic: OnExec runs on the ring-buffer reader,
	// which must not wait behind m.mu either.
	execEvents, execDropped atomic.Uint64
	pids                    map[int]FileKey
	// others are processes the scan found running no probed binary (not
	// Go, out of scope, kernel threads): skipped until they exec.
	others   map[int]struct{}
	rejected map[FileKey]FileGen
	// settledKeys mirrors bins and rejected (key -> generation) behind its
	// own lock for the gate's event loop: the answer for a known file must
	// not wait behind m.mu.
	settledMu   sync.RWMutex
	settledKeys map[FileKey]FileGen
	// detaching counts, per file, forgotten binaries whose probes are
	// being detached (staleProbes).
	detaching map[FileKey]int
	// exeNames are the kernel's names of settled files in the BPF exec
	// filter (execfilter.go), behind settledMu.
	exeNames   map[FileKey][]bpf.ExeKey
	inflight   map[FileKey]*flight
	nextID     uint32
	stats      Stats
	gateStatus GateStatus
	// Map-op flight recorder (arming.go): arm requests binary-wide by
	// inode and per process, and each armed binary's plan and links.
	armExe map[FileKey]armIntent
	armPID map[int]armIntent
	mops   map[*watched]*mapOpState
}

// NewManager makes a manager; Run starts discovery.
func NewManager(k Kernel, cfg Config, log *slog.Logger) *Manager {
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = DefaultRescan
	}
	if cfg.MaxBinaries <= 0 {
		cfg.MaxBinaries = DefaultMaxBinaries
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	m := &Manager{
		k: k, cfg: cfg, log: log.With("component", "probes"),
		exec:        make(chan Exec, 4096),
		scanSoon:    make(chan struct{}, 1),
		refresh:     make(chan chan struct{}),
		refineQ:     make(chan *watched, refineQueue),
		q:           newWorkQueue(),
		bins:        make(map[FileKey]*watched),
		byID:        make(map[uint32]*watched),
		ids:         make(map[uint32]*Binary),
		pids:        make(map[int]FileKey),
		others:      make(map[int]struct{}),
		rejected:    make(map[FileKey]FileGen),
		inflight:    make(map[FileKey]*flight),
		settledKeys: make(map[FileKey]FileGen),
		detaching:   make(map[FileKey]int),
		exeNames:    make(map[FileKey][]bpf.ExeKey),
		stats:       Stats{Errors: make(map[string]uint64)},
		armExe:      make(map[FileKey]armIntent),
		armPID:      make(map[int]armIntent),
		mops:        make(map[*watched]*mapOpState),
	}
	m.gateStatus = GateStatus{State: GateOff}
	if cfg.Gate.Enabled {
		m.gateStatus.State = GateStarting // until Run opens it
	}
	// Never probe ourselves: freezing the daemon at its own fatal would
	// leave nobody to resume it.
	if st, err := os.Stat("/proc/self/exe"); err == nil {
		m.self, _, _ = fileIdentity(st)
	}
	return m
}

// OnExec queues an exec event. It never blocks: when the queue is full
// the process is counted and found by a scan asked for at once.
func (m *Manager) OnExec(x Exec) {
	select {
	case m.exec <- x:
		m.execEvents.Add(1)
	default:
		m.execDropped.Add(1)
		m.ScanSoon()
	}
}

// ScanSoon asks for a scan of /proc now rather than at the next rescan:
// exec events were lost (in the kernel or here). It never blocks.
func (m *Manager) ScanSoon() {
	select {
	case m.scanSoon <- struct{}{}:
	default:
	}
}

// Run opens the exec gate (when configured), scans /proc once, then
// handles exec events and rescans until ctx ends; then it closes the gate
// (the kernel lets held execs proceed) and detaches every probe.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer m.stop(cancel, &wg)
	m.startGate(ctx, &wg)
	m.startRefiner(ctx, &wg)
	m.startWorkers(ctx, &wg)
	m.Scan()
	m.eventLoop(ctx)
	return nil
}

// stop ends what Run started: its goroutines first (the gate's among
// them), then the sightings still queued, answered unsettled so that no
// held exec waits for a worker that is gone, then every probe.
func (m *Manager) stop(cancel context.CancelFunc, wg *sync.WaitGroup) {
	cancel()
	wg.Wait()
	for _, s := range m.q.drain() {
		s.done(false)
		if s.release != nil {
			s.release()
		}
	}
	m.detachAll()
}

// startGate opens the exec gate when configured and runs it until ctx
// ends. A gate that cannot open is reported, not fatal: discovery works
// without it, only a binary's first instructions run unprobed.
func (m *Manager) startGate(ctx context.Context, wg *sync.WaitGroup) {
	if !m.cfg.Gate.Enabled {
		return
	}
	g, err := openGate(m, m.cfg.Gate)
	if err != nil {
		m.setGateStatus(GateStatus{State: GateUnavailable, Reason: err.Error()})
		m.log.Warn("exec gate unavailable: a binary's first instructions run before its probes are in; "+
			"crashes in the first milliseconds after exec can be missed", "err", err)
		return
	}
	m.gate.Store(g)
	if f := m.filter(); f != nil {
		// Execs in mount namespaces the gate does not watch yet
		// are sent even for known files, and those it held do
		// not wake the daemon (execfilter.go).
		if err := f.SetExecGate(true); err != nil {
			m.log.Warn("exec filter: gate on", "err", err)
		}
	}
	wg.Add(1)
	go func() { defer wg.Done(); g.run(ctx) }()
}

// startRefiner runs the one goroutine that applies binaries' DWARF to
// refineQueue bounds the binaries waiting for their DWARF.
const refineQueue = 64

// queueRefine asks the refiner to apply w's DWARF; false when the queue is
// full (the tables stand: they equal DWARF for every supported version).
// Not on a worker: reading DWARF takes up to ~300 ms for a large binary,
// and a held exec must not queue behind it.
func (m *Manager) queueRefine(w *watched) bool {
	m.refining.Add(1)
	select {
	case m.refineQ <- w:
		return true
	default:
		m.refining.Add(-1)
		return false
	}
}

// Refining is how many binaries wait for their DWARF to be applied (or
// are being applied): start-up is over for memory once it is 0.
func (m *Manager) Refining() int64 { return m.refining.Load() }

// their layouts, off the workers (see handle).
func (m *Manager) startRefiner(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case w := <-m.refineQ:
				m.refineLayout(w)
				m.refining.Add(-1)
			}
		}
	}()
}

// startWorkers runs cfg.Workers goroutines handling queued sightings: the
// bound on binaries inspected and attached at once.
func (m *Manager) startWorkers(ctx context.Context, wg *sync.WaitGroup) {
	for i := 0; i < m.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				s, ok := m.q.pop(ctx)
				if !ok {
					return
				}
				m.handle(s)
			}
		}()
	}
}

// eventLoop takes exec events and rescans every cfg.Rescan until ctx ends.
func (m *Manager) eventLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.Rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case x := <-m.exec:
			m.sightExec(x)
		case <-m.scanSoon:
			m.Scan()
		case done := <-m.refresh:
			if time.Since(m.lastScan) >= refreshEvery {
				m.scan(true)
			}
			close(done)
		case <-t.C:
			m.Scan()
			m.SyncMapOps() // exited processes, expired arms
		}
	}
}

// sightExec queues the binary an exec event names, unless it is known:
// then the exec filter only learns the kernel's name for the file.
func (m *Manager) sightExec(x Exec) {
	if g := m.gate.Load(); g != nil {
		// Every exec event, of a known file or not: how a new
		// mount namespace (a container) is noticed (the BPF side
		// sends execs in namespaces not watched yet).
		g.noteProcess(x.PID)
	}
	s, ok := m.sightPID(x.PID, ViaExec)
	switch {
	case !ok:
	case m.known(s):
		m.learnExe(s, x)
	default:
		m.q.push(prioExec, s)
	}
}

// Scan looks at every process in /proc and queues binaries not seen yet;
// then it forgets exited processes, detaches binaries rewritten in place
// or deleted (when no process runs them), and lets the gate drop mount
// namespaces no process uses any more.
func (m *Manager) Scan() { m.scan(false) }

// refreshEvery: Refresh scans at most this often.
const refreshEvery = time.Second

// Refresh scans /proc now (unless a scan ended within refreshEvery),
// checking every known process's identity, so that a listing (`ps`,
// status) shows the processes running now and not as of the last
// rescan: execs of settled files send no event (execfilter.go). It waits
// until the scan is done or ctx ends; without Run it waits for ctx.
func (m *Manager) Refresh(ctx context.Context) {
	done := make(chan struct{})
	select {
	case m.refresh <- done:
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// scan is Scan; identity checks every known process's identity whatever
// the scan count.
func (m *Manager) scan(identity bool) {
	defer func() { m.lastScan = time.Now() }()
	ents, err := os.ReadDir(m.cfg.ProcRoot)
	if err != nil {
		m.fail("scan_proc", err)
		return
	}
	checkIdentity := m.scanTick(identity)
	seen := m.sweep(ents, true)
	for _, w := range m.prune(seen, checkIdentity) {
		m.log.Info("binary rewritten or deleted: probes removed", "path", w.bin.Path)
		m.detach(w)
	}
	if g := m.gate.Load(); g != nil {
		g.prune()
	}
}

// sweep looks at every process of ents not settled yet: those running a
// probed binary are tracked, others noted; new binaries are queued when
// queue is set. It returns the PIDs listed.
func (m *Manager) sweep(ents []os.DirEntry, queue bool) map[int]bool {
	seen := make(map[int]bool, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		seen[pid] = true
		if m.settledPID(pid) {
			continue
		}
		s, ok := m.sightPID(pid, ViaScan)
		switch {
		case ok && !m.known(s):
			if queue {
				m.q.push(prioScan, s)
			}
		case ok || errors.Is(s.err, errNoExe):
			// Settled (not Go, out of scope) or a kernel thread: not
			// looked at again until it execs.
			m.noteOther(pid)
		}
	}
	return seen
}

// scanTick counts a scan and says whether this one checks the identity of
// known processes. A listed process already known is its same self (a PID
// reused runs a new exec, whose event re-sights it); its start time is
// checked only every identityEvery scans: an idle host costs a directory
// read and a map lookup per process per scan.
func (m *Manager) scanTick(force bool) (checkIdentity bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.Scans++
	if !force && m.stats.Scans%identityEvery != 0 {
		return false
	}
	// And look at every other process again: an exec whose event was
	// lost may have turned one of them into a Go program.
	clear(m.others)
	return true
}

// settledPID reports whether the scan can skip pid: it runs a probed
// binary, or one that gets no probes.
func (m *Manager) settledPID(pid int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, tracked := m.pids[pid]
	_, other := m.others[pid]
	return tracked || other
}

func (m *Manager) noteOther(pid int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, tracked := m.pids[pid]; !tracked && len(m.others) < maxRejected {
		m.others[pid] = struct{}{}
	}
}

// prune forgets processes not in seen (or, when checkIdentity, no longer
// the process first seen under their PID), and binaries no process runs
// whose file was rewritten in place or deleted; it returns those for
// detaching.
func (m *Manager) prune(seen map[int]bool, checkIdentity bool) (gone []*watched) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.recount()
	for pid := range m.others {
		if !seen[pid] {
			delete(m.others, pid)
		}
	}
	for pid, key := range m.pids {
		w := m.bins[key]
		id, ok := w.pids[pid]
		// An exec of a known file sends no event: a process that exec'd
		// something else is found by the identity check.
		if seen[pid] && ok && (!checkIdentity || (id.Check() == nil && m.runs(pid, key))) {
			continue
		}
		delete(m.pids, pid)
		delete(w.pids, pid)
	}
	for key, w := range m.bins {
		if len(w.pids) > 0 || w.bin.file == nil {
			continue
		}
		// A running binary cannot be written (ETXTBSY); an idle one can,
		// in place, and its probes would then sit at stale offsets.
		if same, linked := w.bin.current(); !same || !linked {
			m.forget(key, w)
			gone = append(gone, w)
			m.stats.Replaced++
		}
	}
	return gone
}

// sightPID describes the binary process pid runs.
func (m *Manager) sightPID(pid int, via string) (sighting, bool) {
	exe := m.cfg.ProcRoot + "/" + strconv.Itoa(pid) + "/exe"
	st, err := os.Stat(exe)
	if err != nil {
		// Kernel threads have no exe; a vanished process is counted.
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(m.cfg.ProcRoot + "/" + strconv.Itoa(pid)); serr != nil {
				m.mu.Lock()
				m.stats.ProcessGone++
				m.mu.Unlock()
			} else {
				return sighting{err: errNoExe}, false
			}
		}
		return sighting{err: err}, false
	}
	key, gen, ok := fileIdentity(st)
	if !ok || key == m.self {
		return sighting{}, false
	}
	return sighting{via: via, pid: pid, path: exe, key: key, gen: gen, at: time.Now()}, true
}

// known handles s if its binary is settled: probed (the process is added
// to it) or rejected, with the same file contents. A probed binary whose
// file changed is forgotten here, and detached, so that s inspects it
// again.
func (m *Manager) known(s sighting) bool {
	m.mu.Lock()
	if w, ok := m.bins[s.key]; ok {
		if w.bin.Gen == s.gen {
			m.track(s.pid, w)
			m.recount()
			w.lastRun = time.Now()
			m.mu.Unlock()
			return true
		}
		m.forget(s.key, w)
		m.stats.Replaced++
		m.recount()
		m.mu.Unlock()
		m.log.Info("binary rewritten in place: probes replaced", "path", w.bin.Path)
		m.detach(w)
		return false
	}
	gen, ok := m.rejected[s.key]
	if ok && gen == s.gen && s.pid > 0 {
		// It exec'd something that is not a probed Go program.
		if old, tracked := m.pids[s.pid]; tracked {
			if ow := m.bins[old]; ow != nil {
				delete(ow.pids, s.pid)
			}
			delete(m.pids, s.pid)
			m.recount()
		}
	}
	m.mu.Unlock()
	return ok && gen == s.gen
}

// discover inspects and probes the binary of pid now, in the caller.
func (m *Manager) discover(pid int) {
	if s, ok := m.sightPID(pid, ViaRequest); ok && !m.known(s) {
		m.handle(s)
	}
}

// handle settles the binary of s: classifies it, reads it and attaches its
// crash probes, once per file however many sightings ask at once.
func (m *Manager) handle(s sighting) {
	// settled: the file's fate is decided for as long as it is unchanged
	// (the gate may stop holding its execs); not when it could not be
	// read, or found no room under the cap.
	settled := false
	defer func() {
		s.done(settled)
		if s.release != nil {
			s.release()
		}
	}()
	if m.known(s) {
		settled = true
		return
	}
	fl, first := m.joinFlight(s.key)
	if !first {
		<-fl.done
		settled = m.known(s)
		return
	}
	defer m.land(s.key, fl)
	settled = m.settleFile(&s)
}

// joinFlight returns the flight inspecting the file key, starting one when
// there is none (first: the caller inspects it and must land it).
func (m *Manager) joinFlight(key FileKey) (fl *flight, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.inflight[key]; ok {
		return f, false
	}
	fl = &flight{done: make(chan struct{})}
	m.inflight[key] = fl
	return fl, true
}

// land ends the flight of key, waking the sightings that waited for it.
func (m *Manager) land(key FileKey, fl *flight) {
	m.mu.Lock()
	delete(m.inflight, key)
	m.mu.Unlock()
	close(fl.done)
}

// settleFile opens the file s saw, rejects it when out of scope or not Go,
// else inspects it and has it registered; it reports whether the file is
// settled. It answers s (s.done) as soon as the probes are in, before the
// DWARF is read.
func (m *Manager) settleFile(s *sighting) (settled bool) {
	// Hold the binary open and read through our own fd: the process may
	// exit (and /proc/PID/exe vanish) while we work.
	f, err := os.Open(s.path)
	if err != nil {
		return false
	}
	defer f.Close()
	fdPath := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	path, err := os.Readlink(fdPath)
	if err != nil {
		return false
	}
	path = strings.TrimSuffix(path, " (deleted)")
	if !m.cfg.Scope.Allows(path) {
		m.reject(s.key, s.gen, func(st *Stats) { st.OutOfScope++ })
		return true
	}
	t0 := time.Now()
	bin, err := safeInspect(fdPath, false)
	m.log.Debug("inspected", "path", path, "took", time.Since(t0), "queued", t0.Sub(s.at))
	m.mu.Lock()
	m.stats.Inspected++
	m.mu.Unlock()
	if errors.Is(err, ErrNotGo) {
		m.reject(s.key, s.gen, func(st *Stats) { st.NonGoExecutables++ })
		return true
	}
	return m.probeInspected(s, path, bin, err)
}

// probeInspected registers an inspected Go binary (attaching its probes),
// lets the exec s held proceed, then queues the binary for its DWARF.
func (m *Manager) probeInspected(s *sighting, path string, bin *Binary, inspectErr error) (settled bool) {
	if bin != nil && (bin.Key != s.key || bin.Gen != s.gen) {
		// Replaced or rewritten between the sighting and the open: what
		// was read is what gets probed; the gate must hold the next exec.
		s.key, s.gen = bin.Key, bin.Gen
	} else {
		settled = true
	}
	w, roomless := m.register(*s, path, bin, inspectErr)
	settled = settled && !roomless
	s.done(settled) // probes are in (or never will be): the exec may proceed
	if w != nil && w.bin.HasDWARF {
		m.queueRefine(w)
	}
	return settled
}

// register records a newly inspected binary and attaches its crash probes
// (and map-op probes when armed). It returns w when probes are attached;
// roomless when the cap left no room (the binary is not recorded then,
// and is tried again at its next sighting).
func (m *Manager) register(s sighting, path string, bin *Binary, inspectErr error) (w *watched, roomless bool) {
	if bin == nil {
		bin = &Binary{Key: s.key, Gen: s.gen}
	}
	bin.Path = path
	m.mu.Lock()
	atCap := len(m.bins) >= m.cfg.MaxBinaries
	m.mu.Unlock()
	if atCap {
		// Execs of probed binaries send no event (execfilter.go): find
		// their processes started since the last scan before choosing
		// a binary no process runs.
		if ents, err := os.ReadDir(m.cfg.ProcRoot); err == nil {
			m.sweep(ents, false)
		}
	}
	m.mu.Lock()
	m.nextID++
	w = &watched{id: m.nextID, bin: bin, pids: map[int]procmem.Identity{}, lastRun: time.Now(), foundBy: s.via}
	evict, full := m.makeRoom()
	m.mu.Unlock()
	for _, e := range evict {
		m.log.Info("binary cap reached: probes of the least recently run binary removed", "path", e.bin.Path, "max_binaries", m.cfg.MaxBinaries)
		m.detach(e)
	}
	switch {
	case inspectErr != nil:
		w.err = inspectErr.Error()
		m.count("inspect")
		m.log.Warn("go binary not probed", "path", path, "pid", s.pid, "via", s.via, "err", inspectErr)
	case full:
		m.mu.Lock()
		m.stats.CapRefused++
		m.mu.Unlock()
		m.log.Warn("go binary not probed: discovery.max_binaries reached and every probed binary has a live process",
			"path", path, "max_binaries", m.cfg.MaxBinaries)
		_ = bin.Close()
		return nil, true
	default:
		t0 := time.Now()
		err := m.attach(w)
		m.log.Debug("attached", "path", path, "took", time.Since(t0))
		if err != nil {
			w.err = err.Error()
			m.count("attach")
			m.log.Warn("attach crash probes", "path", path, "pid", s.pid, "err", err)
		}
	}
	w.probedAfter = time.Since(s.at)
	if w.bin.Table != nil {
		// Kept for captures, which read it again when a process crashes;
		// the pages read while looking up the crash functions are not:
		// a host's hundreds of idle binaries must cost kilobytes each.
		w.bin.Table.Trim()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.recount()
	m.bins[w.bin.Key] = w
	m.byID[w.id] = w
	m.setID(w.id, w.bin)
	m.settle(w.bin.Key, &w.bin.Gen)
	m.track(s.pid, w)
	if w.err != "" {
		return nil, false
	}
	m.log.Info("crash probes attached", "path", path, "pid", s.pid, "via", s.via, "go", bin.GoVersion,
		"maps", bin.MapLayout, "stripped", bin.Stripped, "pclntab", bin.PCLNTab.How, "probes", w.attached,
		"links", len(w.links), "after", w.probedAfter.Round(time.Microsecond))
	m.syncMapOps(w, "") // armed before it ran, or mapops.always
	return w, false
}

// track records that process pid runs w's binary (and no longer the one
// it ran before an exec). Called with m.mu held.
func (m *Manager) track(pid int, w *watched) {
	if pid <= 0 {
		return
	}
	id, err := procmem.IdentityOf(pid)
	if err != nil {
		return
	}
	if old, ok := m.pids[pid]; ok && old != w.bin.Key {
		if ow := m.bins[old]; ow != nil {
			delete(ow.pids, pid)
		}
	}
	w.pids[pid] = id
	m.pids[pid] = w.bin.Key
	delete(m.others, pid)
}

// makeRoom forgets the least recently run binaries no process runs until
// one more fits under the cap, and returns them for detaching; full when
// none could go. Called with m.mu held.
func (m *Manager) makeRoom() (evict []*watched, full bool) {
	if len(m.bins) >= m.cfg.MaxBinaries {
		// Exits are noticed at the next scan; look now.
		for _, w := range m.bins {
			for pid, id := range w.pids {
				if id.Check() != nil {
					delete(w.pids, pid)
					delete(m.pids, pid)
				}
			}
		}
	}
	for len(m.bins) >= m.cfg.MaxBinaries {
		var lru *watched
		for _, w := range m.bins {
			if len(w.pids) == 0 && (lru == nil || w.lastRun.Before(lru.lastRun)) {
				lru = w
			}
		}
		if lru == nil {
			return evict, true
		}
		m.forget(lru.bin.Key, lru)
		m.stats.Evicted++
		evict = append(evict, lru)
	}
	return evict, false
}

// forget removes w from every index (captures no longer find it); the
// caller detaches it after releasing m.mu. Called with m.mu held.
func (m *Manager) forget(key FileKey, w *watched) {
	if !w.forgotten {
		w.forgotten = true
		m.detaching[key]++
	}
	m.settle(key, nil)
	m.setID(w.id, nil)
	delete(m.bins, key)
	delete(m.byID, w.id)
	for pid := range w.pids {
		delete(m.pids, pid)
	}
	m.closeMapOps(w)
}

func (m *Manager) count(reason string) {
	m.mu.Lock()
	m.stats.Errors[reason]++
	m.mu.Unlock()
}

// safeInspect is Inspect with a panic turned into an error: every
// executable on the host passes through it, and a malformed one must cost
// only its own probes.
func safeInspect(path string, withDWARF bool) (b *Binary, err error) {
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("inspect %s: malformed binary: %v", path, r)
		}
	}()
	return inspect(path, withDWARF)
}

// refineLayout applies the DWARF of w's binary once its probes are in:
// the watched binary gets a new Binary value with the refined layout, so
// captures holding the previous one keep a consistent view, and the BPF
// side gets the goid offset if DWARF moved it.
func (m *Manager) refineLayout(w *watched) {
	var lay *goruntime.Layout
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("malformed DWARF: %v", r)
			}
		}()
		lay, err = w.bin.dwarfLayout(w.bin.fdPath())
		return err
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.log.Warn("DWARF not applied; built-in layout kept", "path", w.bin.Path, "err", err)
		return
	}
	if m.byID[w.id] != w { // detached meanwhile
		return
	}
	nb := *w.bin
	nb.Layout = lay
	w.bin = &nb
	m.setID(w.id, w.bin)
	if goid, err := lay.G.Goid.Get("runtime.g.goid"); err == nil && m.k != nil {
		if err := m.k.SetBinary(w.id, bpf.BinConfig{GoidOff: uint32(goid)}); err != nil {
			m.log.Warn("update goid offset from DWARF", "path", w.bin.Path, "err", err)
		}
	}
}

// reject remembers a file that gets no probes (not Go, out of scope) for
// as long as its contents do not change.
func (m *Manager) reject(key FileKey, gen FileGen, count func(*Stats)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.rejected) >= maxRejected {
		for k := range m.rejected {
			m.settle(k, nil)
		}
		m.rejected = make(map[FileKey]FileGen)
	}
	m.rejected[key] = gen
	m.settle(key, &gen)
	count(&m.stats)
}

// settle records (gen non-nil) or forgets a settled file for the gate.
func (m *Manager) settle(key FileKey, gen *FileGen) {
	m.settledMu.Lock()
	defer m.settledMu.Unlock()
	if g, ok := m.settledKeys[key]; ok && (gen == nil || g != *gen) {
		m.forgetExeNames(key) // its execs must send events again
	}
	if gen == nil {
		delete(m.settledKeys, key)
		return
	}
	m.settledKeys[key] = *gen
}

// settled reports whether the file (key, gen) needs no inspection: probed
// or rejected with these contents.
func (m *Manager) settled(key FileKey, gen FileGen) bool {
	m.settledMu.RLock()
	defer m.settledMu.RUnlock()
	g, ok := m.settledKeys[key]
	return ok && g == gen
}

// attach puts the crash uprobe on every crash function of w's binary,
// through the binary's own open file (whatever mount namespace it is in,
// deleted or not). w is not published yet: m.mu is not needed.
func (m *Manager) attach(w *watched) error {
	exe := w.bin.fdPath()
	goid, err := w.bin.Layout.G.Goid.Get("runtime.g.goid")
	if err != nil {
		return err
	}
	if err := m.k.SetBinary(w.id, bpf.BinConfig{GoidOff: uint32(goid)}); err != nil {
		return err
	}
	ex, err := link.OpenExecutable(exe)
	if err != nil {
		return fmt.Errorf("open executable: %w", err)
	}
	// Never Address 0: that makes cilium/ebpf load and keep the whole
	// symbol table. Every offset was checked to be a function entry.
	addrs := make([]uint64, len(w.bin.Funcs))
	cookies := make([]uint64, len(w.bin.Funcs))
	for i, fn := range w.bin.Funcs {
		addrs[i], cookies[i] = fn.FileOffset, bpf.Cookie(w.id, w.bin.probeKinds[i])
	}
	// One uprobe_multi link per binary needs only CAP_BPF and CAP_PERFMON;
	// perf-event uprobes (one link per function) also need CAP_SYS_ADMIN
	// and are the fallback for kernels before 6.6.
	multiErr := errors.New("not tried")
	if prog, err := m.k.CrashMultiProgram(); err == nil {
		l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: addrs, Cookies: cookies})
		if err == nil {
			w.links = append(w.links, l)
			w.attached = len(addrs)
			return nil
		}
		multiErr = err
	} else {
		multiErr = err
	}
	for i, fn := range w.bin.Funcs {
		l, err := ex.Uprobe(fn.Name, m.k.CrashProgram(), &link.UprobeOptions{Address: addrs[i], Cookie: cookies[i]})
		if err != nil {
			m.detach(w)
			return fmt.Errorf("uprobe %s at file offset %#x: %w (uprobe_multi: %v)", fn.Name, fn.FileOffset, err, multiErr)
		}
		w.links = append(w.links, l)
	}
	w.attached = len(addrs)
	return nil
}

// detach removes w's probes from the kernel and releases its binary. w
// was forgotten first (forget), under m.mu; detach runs without it:
// closing a perf-event uprobe costs ~100 ms.
func (m *Manager) detach(w *watched) {
	for _, l := range w.links {
		if err := l.Close(); err != nil {
			m.log.Warn("detach uprobe", "path", w.bin.Path, "err", err)
		}
	}
	if len(w.links) > 0 {
		m.log.Info("crash probes detached", "path", w.bin.Path)
	}
	w.links, w.attached = nil, 0
	if m.k != nil {
		_ = m.k.DeleteBinary(w.id)
	}
	if g := m.gate.Load(); g != nil && w.bin.file != nil {
		// Its next exec must be held again (an ignore mark would let it
		// run unprobed).
		g.unignore(w.bin.file)
	}
	m.mu.Lock()
	w.detached = true
	free := w.borrows == 0
	if w.forgotten {
		w.forgotten = false
		if m.detaching[w.bin.Key]--; m.detaching[w.bin.Key] <= 0 {
			delete(m.detaching, w.bin.Key)
		}
	}
	m.mu.Unlock()
	if free {
		_ = w.bin.Close()
	}
}

// staleProbes reports whether probes set for other contents of the file
// key may still be in the kernel: a binary forgotten but not yet
// detached, or one watched with other contents (rewritten in place, not
// noticed yet). An exec of the new contents must not map the file while
// they are: its breakpoints would land at the old offsets, mid-instruction.
func (m *Manager) staleProbes(key FileKey, gen FileGen) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.detaching[key] > 0 {
		return true
	}
	w := m.bins[key]
	return w != nil && w.attached > 0 && w.bin.Gen != gen
}

// Borrow returns the binary discovery inspected for the executable at
// path (typically /proc/PID/exe) when it watches that file with the same
// contents, and a release the caller must call when done with it: a
// borrowed binary is closed only after its last borrower released it,
// however soon it is detached. Live decode and dump borrow it, so that an
// operator's first look at a running program does not inspect its binary
// again (~120 ms of buildinfo, pclntab and DWARF for a small binary).
// ok is false when discovery has no usable inspection of that file, or
// has not applied its DWARF yet.
func (m *Manager) Borrow(path string) (b *Binary, release func(), ok bool) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, false
	}
	key, gen, ok := fileIdentity(st)
	if !ok {
		return nil, nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.bins[key]
	if w == nil || w.detached || w.bin.Gen != gen || w.bin.Table == nil || w.bin.Layout == nil {
		return nil, nil, false
	}
	if w.bin.HasDWARF && w.bin.Layout.Source != "dwarf" {
		// Not refined yet (refineLayout): a decode reads with the
		// binary's own DWARF, so the caller inspects it itself.
		return nil, nil, false
	}
	w.borrows++
	var once sync.Once
	return w.bin, func() { once.Do(func() { m.giveBack(w) }) }, true
}

// giveBack ends one Borrow of w's binary, closing it when w was detached
// meanwhile and this was its last borrower.
func (m *Manager) giveBack(w *watched) {
	m.mu.Lock()
	w.borrows--
	last := w.borrows == 0 && w.detached
	m.mu.Unlock()
	if last {
		_ = w.bin.Close()
	}
}

func (m *Manager) detachAll() {
	m.mu.Lock()
	var all []*watched
	for key, w := range m.bins {
		m.forget(key, w)
		all = append(all, w)
	}
	clear(m.pids)
	m.recount()
	m.mu.Unlock()
	for _, w := range all {
		m.detach(w)
	}
}

func (m *Manager) recount() {
	m.stats.BinariesWatched = len(m.bins)
	m.stats.GoProcesses = len(m.pids)
	n := 0
	for _, w := range m.bins {
		n += w.attached
	}
	m.stats.ProbesAttached = n
	n = 0
	for _, s := range m.mops {
		n += s.links()
	}
	m.stats.MapOpLinks = n
}

// setGateStatus records the gate's state when it is not running.
func (m *Manager) setGateStatus(st GateStatus) {
	m.mu.Lock()
	m.gateStatus = st
	m.mu.Unlock()
}

func (m *Manager) fail(reason string, err error) {
	m.mu.Lock()
	m.stats.Errors[reason]++
	m.mu.Unlock()
	m.log.Warn("discovery", "reason", reason, "err", err)
}

// InspectPID inspects the binary a process runs without attaching
// anything: for a crash whose binary was detached meanwhile. The caller
// closes the result.
func (m *Manager) InspectPID(pid int) (*Binary, error) {
	exe := m.cfg.ProcRoot + "/" + strconv.Itoa(pid) + "/exe"
	f, err := os.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("open binary of pid %d: %w", pid, err)
	}
	defer f.Close()
	b, err := Inspect("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	if path, err := os.Readlink(exe); err == nil {
		b.Path = strings.TrimSuffix(path, " (deleted)")
	}
	return b, nil
}

// Binary returns the binary with probe id, as named by an event's cookie.
// It never waits for discovery's kernel work (see ids).
func (m *Manager) Binary(id uint32) (*Binary, bool) {
	m.idMu.RLock()
	defer m.idMu.RUnlock()
	b, ok := m.ids[id]
	return b, ok
}

// setID records (b non-nil) or forgets the binary of probe id.
func (m *Manager) setID(id uint32, b *Binary) {
	m.idMu.Lock()
	defer m.idMu.Unlock()
	if b == nil {
		delete(m.ids, id)
		return
	}
	m.ids[id] = b
}

// Stats returns a copy of the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.ExecEvents, s.ExecDropped = m.execEvents.Load(), m.execDropped.Load()
	s.Queued, s.QueueDropped = m.q.lens()
	s.Gate = m.gateStatus
	if g := m.gate.Load(); g != nil {
		s.Gate = g.status()
	}
	s.Errors = make(map[string]uint64, len(m.stats.Errors))
	for k, v := range m.stats.Errors {
		s.Errors[k] = v
	}
	return s
}

// Binaries lists every watched Go binary, sorted by path.
func (m *Manager) Binaries() []BinaryStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]BinaryStatus, 0, len(m.bins))
	for _, w := range m.bins {
		s := BinaryStatus{
			ID: w.id, Path: w.bin.Path, Dev: w.bin.Key.Dev, Ino: w.bin.Key.Ino,
			GoVersion: w.bin.GoVersion, MapLayout: w.bin.MapLayout, Stripped: w.bin.Stripped,
			HasDWARF: w.bin.HasDWARF, PIDs: []int{}, Probes: []string{}, Error: w.err,
			FoundBy: w.foundBy, ProbedAfterNS: int64(w.probedAfter), LastRun: w.lastRun,
			PCLNTab:      apitype.PCLNTab{Addr: w.bin.PCLNTab.Addr, Size: w.bin.PCLNTab.Size, How: w.bin.PCLNTab.How},
			ExternalLink: w.bin.ExternalLink,
		}
		if w.bin.Layout != nil {
			s.LayoutSource = w.bin.Layout.Source
		}
		for pid := range w.pids {
			s.PIDs = append(s.PIDs, pid)
		}
		sort.Ints(s.PIDs)
		if w.attached > 0 {
			for _, f := range w.bin.Funcs {
				s.Probes = append(s.Probes, f.Name)
			}
		}
		if ms, ok := m.mops[w]; ok {
			s.MapOps = ms.status()
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Path < out[j].Path || (out[i].Path == out[j].Path && out[i].ID < out[j].ID)
	})
	return out
}
