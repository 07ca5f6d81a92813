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
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/procmem"
)

// Kernel is what the manager needs of the loaded BPF objects.
type Kernel interface {
	CrashProgram() *ebpf.Program
	CrashMultiProgram() (*ebpf.Program, error)
	SetBinary(id uint32, cfg bpf.BinConfig) error
	DeleteBinary(id uint32) error
}

// Config configures discovery.
type Config struct {
	Scope Scope
	// Rescan is how often /proc is scanned again, to catch processes whose
	// exec event was missed and to detach binaries no process runs.
	Rescan   time.Duration
	ProcRoot string // "/proc"
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
	attached int
	// idleScans counts consecutive scans that found no process running
	// the binary; it is detached at the second, since a process exec'd
	// just after a scan listed /proc is only known once its exec event is
	// handled.
	idleScans int
}

type rejected struct {
	mtime time.Time
	size  int64
}

// maxRejected bounds the cache of non-Go executables.
const maxRejected = 1 << 16

// Manager discovers Go processes and keeps crash probes attached to the
// binaries they run.
type Manager struct {
	k    Kernel
	cfg  Config
	log  *slog.Logger
	self FileKey
	exec chan int

	mu   sync.Mutex
	bins map[FileKey]*watched
	byID map[uint32]*watched
	// ids mirrors byID for Binary, which capture calls while a process is
	// frozen: it must never wait behind m.mu, which is held across slow
	// kernel work (closing perf-event uprobes costs ~100 ms each).
	idMu sync.RWMutex
	ids  map[uint32]*Binary
	// Exec counters are atomic: OnExec runs on the ring-buffer reader,
	// which must not wait behind m.mu either.
	execEvents, execDropped atomic.Uint64
	pids                    map[int]FileKey
	rejected                map[FileKey]rejected
	nextID                  uint32
	stats                   Stats
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
		cfg.Rescan = 5 * time.Second
	}
	m := &Manager{
		k: k, cfg: cfg, log: log.With("component", "probes"),
		exec:     make(chan int, 4096),
		bins:     make(map[FileKey]*watched),
		byID:     make(map[uint32]*watched),
		ids:      make(map[uint32]*Binary),
		pids:     make(map[int]FileKey),
		rejected: make(map[FileKey]rejected),
		stats:    Stats{Errors: make(map[string]uint64)},
		armExe:   make(map[FileKey]armIntent),
		armPID:   make(map[int]armIntent),
		mops:     make(map[*watched]*mapOpState),
	}
	// Never probe ourselves: freezing the daemon at its own fatal would
	// leave nobody to resume it.
	if st, err := os.Stat("/proc/self/exe"); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			m.self = FileKey{uint64(sys.Dev), sys.Ino}
		}
	}
	return m
}

// OnExec queues a pid seen in an exec event. It never blocks: when the
// queue is full the pid is counted and left to the next rescan.
func (m *Manager) OnExec(pid int) {
	select {
	case m.exec <- pid:
		m.execEvents.Add(1)
	default:
		m.execDropped.Add(1)
	}
}

// Run scans /proc once, then handles exec events and rescans until ctx ends;
// then it detaches every probe.
func (m *Manager) Run(ctx context.Context) error {
	defer m.detachAll()
	m.Scan()
	t := time.NewTicker(m.cfg.Rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case pid := <-m.exec:
			m.discover(pid)
		case <-t.C:
			m.Scan()
			m.SyncMapOps() // exited processes, expired arms
		}
	}
}

// Scan looks at every process in /proc, then forgets exited ones and
// detaches binaries no process runs any more.
func (m *Manager) Scan() {
	ents, err := os.ReadDir(m.cfg.ProcRoot)
	if err != nil {
		m.fail("scan_proc", err)
		return
	}
	seen := make(map[int]bool, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		seen[pid] = true
		m.discover(pid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.Scans++
	for pid, key := range m.pids {
		w := m.bins[key]
		id, ok := w.pids[pid]
		if seen[pid] && ok && id.Check() == nil {
			continue
		}
		delete(m.pids, pid)
		delete(w.pids, pid)
	}
	for key, w := range m.bins {
		if len(w.pids) > 0 {
			w.idleScans = 0
			continue
		}
		if w.idleScans++; w.idleScans >= 2 {
			// Forget it for capture first, then do the slow detach.
			m.setID(w.id, nil)
			delete(m.bins, key)
			delete(m.byID, w.id)
			m.detach(w)
		}
	}
	m.recount()
}

// discover looks at one process and attaches to its binary if needed.
func (m *Manager) discover(pid int) {
	exe := m.cfg.ProcRoot + "/" + strconv.Itoa(pid) + "/exe"
	st, err := os.Stat(exe)
	if err != nil {
		// Kernel threads have no exe; a vanished process is counted.
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(m.cfg.ProcRoot + "/" + strconv.Itoa(pid)); serr != nil {
				m.mu.Lock()
				m.stats.ProcessGone++
				m.mu.Unlock()
			}
		}
		return
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	key := FileKey{uint64(sys.Dev), sys.Ino}
	if key == m.self {
		return
	}
	id, err := procmem.IdentityOf(pid)
	if err != nil {
		return
	}

	m.mu.Lock()
	if w, ok := m.bins[key]; ok {
		w.pids[pid] = id
		m.pids[pid] = key
		m.recount()
		m.mu.Unlock()
		return
	}
	if r, ok := m.rejected[key]; ok && r.mtime.Equal(st.ModTime()) && r.size == st.Size() {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()

	path, err := os.Readlink(exe)
	if err != nil {
		return
	}
	if !m.cfg.Scope.Allows(path) {
		m.reject(key, st, func(s *Stats) { s.OutOfScope++ })
		return
	}
	// Hold the binary open and read and attach through our own fd: the
	// process may exit (and /proc/PID/exe vanish) while we work, but the
	// inode stays reachable through /proc/self/fd/N.
	f, err := os.Open(exe)
	if err != nil {
		return
	}
	defer f.Close()
	fdPath := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	bin, err := safeInspect(fdPath, false)
	if errors.Is(err, ErrNotGo) {
		m.reject(key, st, func(s *Stats) { s.NonGoExecutables++ })
		return
	}
	if w := m.register(key, pid, id, path, fdPath, bin, err); w != nil && w.bin.HasDWARF {
		m.refineLayout(w, fdPath)
	}
}

// register records a newly inspected binary and attaches its crash probes
// (and map-op probes when armed). It returns w when probes are attached.
func (m *Manager) register(key FileKey, pid int, id procmem.Identity, path, fdPath string, bin *Binary, err error) *watched {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.recount()
	if w, ok := m.bins[key]; ok { // raced with another discovery
		w.pids[pid] = id
		m.pids[pid] = key
		_ = bin.Close()
		return nil
	}
	m.nextID++
	w := &watched{id: m.nextID, bin: bin, pids: map[int]procmem.Identity{pid: id}}
	if bin == nil {
		bin = &Binary{Key: key}
		w.bin = bin
	}
	bin.Path = strings.TrimSuffix(path, " (deleted)")
	m.bins[key] = w
	m.byID[w.id] = w
	m.setID(w.id, w.bin)
	m.pids[pid] = key
	if err != nil {
		w.err = err.Error()
		m.stats.Errors["inspect"]++
		m.log.Warn("go binary not probed", "path", bin.Path, "pid", pid, "err", err)
		return nil
	}
	if err := m.attach(w, fdPath); err != nil {
		w.err = err.Error()
		m.stats.Errors["attach"]++
		m.log.Warn("attach crash probes", "path", bin.Path, "pid", pid, "err", err)
		return nil
	}
	m.log.Info("crash probes attached", "path", bin.Path, "pid", pid, "go", bin.GoVersion,
		"maps", bin.MapLayout, "stripped", bin.Stripped, "probes", w.attached, "links", len(w.links))
	m.syncMapOps(w, fdPath) // armed before it ran, or mapops.always
	return w
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

// refineLayout applies the DWARF of w's binary (open at path) once its
// probes are in: the watched binary gets a new Binary value with the
// refined layout, so captures holding the previous one keep a consistent
// view, and the BPF side gets the goid offset if DWARF moved it.
func (m *Manager) refineLayout(w *watched, path string) {
	var lay *goruntime.Layout
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("malformed DWARF: %v", r)
			}
		}()
		lay, err = w.bin.dwarfLayout(path)
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

func (m *Manager) reject(key FileKey, st os.FileInfo, count func(*Stats)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.rejected) >= maxRejected {
		clear(m.rejected)
	}
	m.rejected[key] = rejected{mtime: st.ModTime(), size: st.Size()}
	count(&m.stats)
}

// attach puts the crash uprobe on every crash function of w's binary.
// Called with m.mu held.
func (m *Manager) attach(w *watched, exe string) error {
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

func (m *Manager) detach(w *watched) {
	m.closeMapOps(w)
	for _, l := range w.links {
		if err := l.Close(); err != nil {
			m.log.Warn("detach uprobe", "path", w.bin.Path, "err", err)
		}
	}
	if len(w.links) > 0 {
		m.log.Info("crash probes detached", "path", w.bin.Path)
	}
	w.links, w.attached = nil, 0
	_ = m.k.DeleteBinary(w.id)
	_ = w.bin.Close()
}

func (m *Manager) detachAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, w := range m.bins {
		m.setID(w.id, nil)
		delete(m.bins, key)
		delete(m.byID, w.id)
		m.detach(w)
	}
	clear(m.pids)
	m.recount()
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
