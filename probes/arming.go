package probes

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// MapOpsKernel is the loaded map-op flight recorder: its uprobe_multi
// program (an error when the kernel cannot load it) and its perf-event twin.
type MapOpsKernel interface {
	MultiProgram() (*ebpf.Program, error)
	Program() *ebpf.Program
}

// ErrNotWatched is returned when arming names a process or binary that
// discovery does not watch (not Go, out of scope, or gone).
var ErrNotWatched = errors.New("not a watched Go process or binary")

// ErrMapOpsUnavailable is returned when the flight recorder is not loaded.
var ErrMapOpsUnavailable = errors.New("map-op flight recorder not loaded")

// Arm reasons.
const (
	ArmedByCLI     = "cli"
	ArmedOnCrash   = "on-crash"
	ArmedByAlways  = "always"
	ArmScopeBinary = "binary"
	ArmScopePIDs   = "pids"
)

// armIntent is a request for map-op probes: on every process of a binary,
// or on one process. Zero Until: until disarmed.
type armIntent struct {
	Until time.Time
	Why   string
	Path  string
	id    procmem.Identity // PID intents
	key   FileKey
}

func (a armIntent) expired(now time.Time) bool { return !a.Until.IsZero() && now.After(a.Until) }

// mapOpState is the map-op side of one watched binary: its plan (made on
// first arm) and its links, binary-wide or per PID (UprobeOptions.PID).
type mapOpState struct {
	plan     *MapOpPlan
	planErr  string
	planned  bool // planning is tried once per watched binary
	binLinks []link.Link
	pidLinks map[int][]link.Link
}

func (s *mapOpState) links() int {
	n := len(s.binLinks)
	for _, l := range s.pidLinks {
		n += len(l)
	}
	return n
}

// ArmStatus is one arm request and what it got, for `mapsentry arm` and
// GET /v1/mapops.
type ArmStatus = apitype.ArmStatus

// MapOpsStatus is the map-op state of one watched binary in `ps`.
type MapOpsStatus = apitype.BinaryMapOps

// ArmExe arms map-op probes on every process running the executable at
// path, now and until until (zero: until disarmed). The binary need not
// run yet.
func (m *Manager) ArmExe(path string, until time.Time, why string) (ArmStatus, error) {
	if m.cfg.MapOps == nil {
		return ArmStatus{}, ErrMapOpsUnavailable
	}
	key, err := fileKey(path)
	if err != nil {
		return ArmStatus{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.armExe[key] = armIntent{Until: until, Why: why, Path: path, key: key}
	if w, ok := m.bins[key]; ok {
		m.syncMapOps(w, "")
	}
	m.recount()
	return m.exeStatus(key), nil
}

// ArmBinaryID arms the binary with probe id (from a crash event's cookie)
// for d: `mapops.mode: on-crash`.
func (m *Manager) ArmBinaryID(id uint32, d time.Duration, why string) error {
	if m.cfg.MapOps == nil {
		return ErrMapOpsUnavailable
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.byID[id]
	if !ok {
		return fmt.Errorf("binary %d: %w", id, ErrNotWatched)
	}
	until := time.Now().Add(d)
	if old, ok := m.armExe[w.bin.Key]; ok && (old.Until.IsZero() || old.Until.After(until)) {
		return nil // already armed for longer
	}
	m.armExe[w.bin.Key] = armIntent{Until: until, Why: why, Path: w.bin.Path, key: w.bin.Key}
	m.syncMapOps(w, "")
	m.recount()
	m.log.Info("map-op probes armed", "path", w.bin.Path, "why", why, "until", until.Format(time.RFC3339))
	return nil
}

// ArmPID arms map-op probes on process pid only (PID-filtered uprobes).
func (m *Manager) ArmPID(pid int, until time.Time, why string) (ArmStatus, error) {
	if m.cfg.MapOps == nil {
		return ArmStatus{}, ErrMapOpsUnavailable
	}
	id, err := procmem.IdentityOf(pid)
	if err != nil {
		return ArmStatus{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	m.mu.Lock()
	_, known := m.pids[pid]
	m.mu.Unlock()
	if !known {
		m.discover(pid) // not seen yet: look now rather than at the next scan
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key, ok := m.pids[pid]
	if !ok {
		return ArmStatus{}, fmt.Errorf("pid %d: %w", pid, ErrNotWatched)
	}
	w := m.bins[key]
	m.armPID[pid] = armIntent{Until: until, Why: why, Path: w.bin.Path, id: id, key: key}
	m.syncMapOps(w, "")
	m.recount()
	return m.pidStatus(pid), nil
}

// DisarmExe removes the binary-wide arm of path (and any per-PID arms of
// processes running it) and detaches their probes.
func (m *Manager) DisarmExe(path string) (int, error) {
	key, err := fileKey(path)
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, a := range m.armExe {
		if (err == nil && k == key) || a.Path == path {
			delete(m.armExe, k)
			n++
			key, err = k, nil
		}
	}
	if err != nil {
		return 0, err
	}
	for pid, a := range m.armPID {
		if a.key == key {
			delete(m.armPID, pid)
			n++
		}
	}
	if w, ok := m.bins[key]; ok {
		m.syncMapOps(w, "")
	}
	m.recount()
	return n, nil
}

// DisarmPID removes the per-PID arm of pid and detaches its probes. A
// binary-wide arm covering pid stays: disarm the executable for that.
func (m *Manager) DisarmPID(pid int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.armPID[pid]
	if !ok {
		return 0
	}
	delete(m.armPID, pid)
	if w, ok := m.bins[a.key]; ok {
		m.syncMapOps(w, "")
	}
	m.recount()
	return 1
}

// Arms lists every arm request, binary-wide first.
func (m *Manager) Arms() []ArmStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ArmStatus
	for key := range m.armExe {
		out = append(out, m.exeStatus(key))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	pids := make([]int, 0, len(m.armPID))
	for pid := range m.armPID {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		out = append(out, m.pidStatus(pid))
	}
	if m.cfg.MapOps != nil {
		for _, w := range m.bins {
			if m.mops[w] != nil && len(m.mops[w].binLinks) > 0 {
				if _, ok := m.armExe[w.bin.Key]; !ok { // armed by mapops.always
					s := ArmStatus{Scope: ArmScopeBinary, Path: w.bin.Path, Why: ArmedByAlways, Links: len(m.mops[w].binLinks)}
					m.fillPlan(&s, w)
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// MapOpLinks is the manager's own count of map-op links.
func (m *Manager) MapOpLinks() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats.MapOpLinks
}

func (m *Manager) exeStatus(key FileKey) ArmStatus {
	a := m.armExe[key]
	s := ArmStatus{Scope: ArmScopeBinary, Path: a.Path, Why: a.Why, Until: a.Until}
	if w, ok := m.bins[key]; ok && m.mops[w] != nil {
		s.Links = len(m.mops[w].binLinks)
		m.fillPlan(&s, w)
	}
	return s
}

func (m *Manager) pidStatus(pid int) ArmStatus {
	a := m.armPID[pid]
	s := ArmStatus{Scope: "pid", PID: pid, Path: a.Path, Why: a.Why, Until: a.Until}
	if w, ok := m.bins[a.key]; ok && m.mops[w] != nil {
		s.Links = len(m.mops[w].pidLinks[pid])
		if len(m.mops[w].binLinks) > 0 {
			s.Error = "covered by the binary-wide arm of " + w.bin.Path
		}
		m.fillPlan(&s, w)
	}
	return s
}

func (m *Manager) fillPlan(s *ArmStatus, w *watched) {
	ms := m.mops[w]
	if ms.plan != nil {
		s.Probes = ms.plan.ProbeNames()
		s.Refused = ms.plan.Refused
	}
	if ms.planErr != "" {
		s.Error = ms.planErr
	}
}

// wantBinary reports whether w should have binary-wide map-op probes.
func (m *Manager) wantBinary(w *watched, now time.Time) bool {
	if a, ok := m.armExe[w.bin.Key]; ok && !a.expired(now) {
		return true
	}
	return len(m.cfg.MapOpsAlways) > 0 && Scope{Include: m.cfg.MapOpsAlways}.Allows(w.bin.Path)
}

// syncMapOps makes w's map-op links match the arm requests: binary-wide
// links when the binary is armed (per-PID links are then redundant and
// closed), else one PID-filtered set per armed live process of w. exe is
// a path to the open binary, or "" to open it through a process. Called
// with m.mu held.
func (m *Manager) syncMapOps(w *watched, exe string) {
	if m.cfg.MapOps == nil || w.err != "" || len(w.links) == 0 {
		return
	}
	s := m.mapOpStateOf(w)
	want := m.wantedMapOps(w, time.Now())
	m.closeUnwanted(w, s, want)
	if want.nothing() || want.attached(s) {
		return
	}
	if exe == "" {
		f, err := m.openWatched(w)
		if err != nil {
			s.planErr = err.Error()
			m.log.Warn("map-op probes: open binary", "path", w.bin.Path, "err", err)
			return
		}
		defer f.Close()
		exe = "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	}
	if !m.planMapOps(w, s, exe) {
		return
	}
	ex, err := link.OpenExecutable(exe)
	if err != nil {
		s.planErr = fmt.Sprintf("open executable: %v", err)
		return
	}
	if want.binary {
		s.binLinks = m.attachMapOps(w, s, ex, 0)
		return
	}
	for pid := range want.pids {
		if len(s.pidLinks[pid]) == 0 {
			if l := m.attachMapOps(w, s, ex, pid); len(l) > 0 {
				s.pidLinks[pid] = l
			}
		}
	}
}

// mapOpStateOf returns w's map-op state, made on w's first sync.
func (m *Manager) mapOpStateOf(w *watched) *mapOpState {
	s := m.mops[w]
	if s == nil {
		s = &mapOpState{pidLinks: map[int][]link.Link{}}
		m.mops[w] = s
	}
	return s
}

// mapOpWant is which map-op links w should have now: binary-wide, or one
// set per process in pids.
type mapOpWant struct {
	binary bool
	pids   map[int]bool
}

// wantedMapOps reads the unexpired arm requests for w. With no live
// process nothing is wanted: nothing to record, and exits must leave no
// link.
func (m *Manager) wantedMapOps(w *watched, now time.Time) mapOpWant {
	want := mapOpWant{binary: len(w.pids) > 0 && m.wantBinary(w, now), pids: map[int]bool{}}
	if want.binary {
		return want
	}
	for pid, a := range m.armPID {
		if _, live := w.pids[pid]; live && a.key == w.bin.Key && !a.expired(now) {
			want.pids[pid] = true
		}
	}
	return want
}

func (want mapOpWant) nothing() bool { return !want.binary && len(want.pids) == 0 }

// attached reports whether s already has every link wanted.
func (want mapOpWant) attached(s *mapOpState) bool {
	if want.binary {
		return len(s.binLinks) > 0
	}
	for pid := range want.pids {
		if len(s.pidLinks[pid]) == 0 {
			return false
		}
	}
	return true
}

// closeUnwanted closes the links of s that want no longer asks for: they
// would record for a disarmed binary or an exited process.
func (m *Manager) closeUnwanted(w *watched, s *mapOpState, want mapOpWant) {
	if !want.binary && len(s.binLinks) > 0 {
		m.closeLinks(w, &s.binLinks, "binary")
	}
	for pid := range s.pidLinks {
		if !want.pids[pid] {
			l := s.pidLinks[pid]
			m.closeLinks(w, &l, "pid "+strconv.Itoa(pid))
			delete(s.pidLinks, pid)
		}
	}
}

// planMapOps plans w's map-op probes from the binary at exe, once per
// watched binary: a plan that failed is not tried again, its reason stays
// in planErr. It reports whether there are probes to attach.
func (m *Manager) planMapOps(w *watched, s *mapOpState, exe string) bool {
	if s.plan == nil && s.planned {
		return false // planning failed; the reason is in planErr
	}
	if s.plan == nil {
		s.planned = true
		f, err := os.Open(exe)
		if err != nil {
			s.planErr = fmt.Sprintf("open binary: %v", err)
			return false
		}
		plan, err := w.bin.PlanMapOps(f)
		f.Close()
		if err != nil {
			s.planErr = err.Error()
			m.log.Warn("map-op probes: plan", "path", w.bin.Path, "err", err)
			return false
		}
		s.plan, s.planErr = plan, ""
		for _, r := range plan.Refused {
			m.log.Info("map-op probe refused", "path", w.bin.Path, "func", r.Name, "reason", r.Reason)
		}
		if len(plan.Probes) == 0 {
			s.planErr = "no map function could be probed"
		}
	}
	return len(s.plan.Probes) > 0
}

// attachMapOps attaches the plan's probes, PID-filtered when pid > 0. All
// or nothing: a partial set would record some ops and silently miss others.
// One uprobe_multi link carries them all (CAP_BPF and CAP_PERFMON); one
// perf-event uprobe per probe (CAP_SYS_ADMIN) is the fallback for kernels
// before 6.6.
func (m *Manager) attachMapOps(w *watched, s *mapOpState, ex *link.Executable, pid int) []link.Link {
	// The offsets were decoded to emulated instruction boundaries past
	// the prologue: never the entry, never Address 0 (cilium/ebpf would
	// load the symbol table).
	addrs := make([]uint64, len(s.plan.Probes))
	cookies := make([]uint64, len(s.plan.Probes))
	for i := range s.plan.Probes {
		addrs[i], cookies[i] = s.plan.Probes[i].FileOffset, s.plan.Probes[i].cookie(w.id)
	}
	var multiErr error
	if prog, err := m.cfg.MapOps.MultiProgram(); err != nil {
		multiErr = err
	} else if l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: addrs, Cookies: cookies, PID: uint32(pid)}); err != nil {
		multiErr = err
	} else {
		s.planErr = ""
		m.log.Info("map-op probes attached", "path", w.bin.Path, "pid", pid, "probes", len(addrs), "link", "uprobe_multi")
		return []link.Link{l}
	}
	var links []link.Link
	for i := range s.plan.Probes {
		p := &s.plan.Probes[i]
		l, err := ex.Uprobe(p.Name, m.cfg.MapOps.Program(), &link.UprobeOptions{
			Address: p.FileOffset - p.Offset, Offset: p.Offset, PID: pid, Cookie: cookies[i],
		})
		if err != nil {
			m.closeLinks(w, &links, "partial")
			s.planErr = fmt.Sprintf("uprobe %s+%d: %v (uprobe_multi: %v)", p.Name, p.Offset, err, multiErr)
			m.stats.Errors["mapops_attach"]++
			m.log.Warn("map-op probes: attach", "path", w.bin.Path, "func", p.Name, "err", err, "uprobe_multi", multiErr)
			return nil
		}
		links = append(links, l)
	}
	s.planErr = ""
	m.log.Info("map-op probes attached", "path", w.bin.Path, "pid", pid, "probes", len(links), "link", "perf_event")
	return links
}

func (m *Manager) closeLinks(w *watched, links *[]link.Link, what string) {
	for _, l := range *links {
		if err := l.Close(); err != nil {
			m.log.Warn("detach map-op uprobe", "path", w.bin.Path, "err", err)
		}
	}
	if len(*links) > 0 {
		m.log.Info("map-op probes detached", "path", w.bin.Path, "scope", what, "probes", len(*links))
	}
	*links = nil
}

// closeMapOps detaches every map-op link of w. Called with m.mu held.
func (m *Manager) closeMapOps(w *watched) {
	s, ok := m.mops[w]
	if !ok {
		return
	}
	m.closeLinks(w, &s.binLinks, "binary")
	for pid, l := range s.pidLinks {
		m.closeLinks(w, &l, "pid "+strconv.Itoa(pid))
	}
	delete(m.mops, w)
}

// SyncMapOps forgets expired arms and per-PID arms of exited processes,
// then brings every binary's map-op links in line. Run after each scan.
func (m *Manager) SyncMapOps() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for key, a := range m.armExe {
		if a.expired(now) {
			delete(m.armExe, key)
			m.log.Info("map-op arm expired", "path", a.Path, "why", a.Why)
		}
	}
	for pid, a := range m.armPID {
		if a.expired(now) || a.id.Check() != nil {
			delete(m.armPID, pid)
		}
	}
	for _, w := range m.bins {
		m.syncMapOps(w, "")
	}
	m.recount()
}

// openWatched opens the binary of w again, through the file discovery
// holds open (the inode, wherever it is).
func (m *Manager) openWatched(w *watched) (*os.File, error) {
	if w.bin.file == nil {
		return nil, fmt.Errorf("%s: binary not held open", w.bin.Path)
	}
	return os.Open(w.bin.fdPath())
}

func (s *mapOpState) status() *MapOpsStatus {
	out := &MapOpsStatus{Links: s.links(), Error: s.planErr}
	switch {
	case len(s.binLinks) > 0:
		out.Armed = ArmScopeBinary
	case len(s.pidLinks) > 0:
		out.Armed = ArmScopePIDs
		for pid := range s.pidLinks {
			out.PIDs = append(out.PIDs, pid)
		}
		sort.Ints(out.PIDs)
	}
	if s.plan != nil {
		out.Probes = s.plan.ProbeNames()
		out.Refused = s.plan.Refused
	}
	return out
}

func fileKey(path string) (FileKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return FileKey{}, err // *PathError: "stat PATH: ..."
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return FileKey{}, fmt.Errorf("stat %s: no inode", path)
	}
	return FileKey{uint64(sys.Dev), sys.Ino}, nil
}
