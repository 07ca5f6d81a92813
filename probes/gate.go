package probes

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/apitype"
)

// The exec gate closes the window between exec and attach: a fanotify
// FAN_OPEN_EXEC_PERM mark on every filesystem makes each execve wait in
// the kernel (task state D, nothing the parent can see: no SIGSTOP, no job
// control) until the daemon answers. The daemon reads the binary through
// the event's file descriptor, attaches the crash probes to its inode,
// then answers ALLOW; the first instruction of a new Go binary therefore
// runs with its probes in. Settled files (probed, not Go, out of scope)
// get an ignore mark, so later execs of them do not wait at all; the mark
// is cleared by the kernel when the file is modified, so a rewritten
// binary is held and read again. A per-exec deadline answers ALLOW when
// inspection is slower, and the kernel answers ALLOW for every pending
// exec when the daemon's fanotify descriptor closes (the daemon died): the
// gate fails open.
//
// Measured here (docs/discovery.md): no measurable cost for execs of known
// files, one extra event per new file.

// GateConfig configures the exec gate.
type GateConfig struct {
	Enabled bool
	// Deadline bounds how long one exec waits for its binary to be
	// inspected and probed; then it is allowed and the probes follow.
	Deadline time.Duration
}

// DefaultGateDeadline is the per-exec wait bound when none is set.
const DefaultGateDeadline = 50 * time.Millisecond

// Gate states.
const (
	GateOff         = "off"         // discovery.exec_gate.enabled is false
	GateStarting    = "starting"    // enabled, not open yet
	GateActive      = "active"      // execs on covered filesystems wait for their probes
	GateUnavailable = "unavailable" // refused by the kernel (Reason says why)
)

// GateStatus is the exec gate in `mapsentry status`.
type GateStatus = apitype.GateStatus

// FSCoverage is one filesystem and whether the gate covers it.
type FSCoverage = apitype.FSCoverage

// pseudoFS are filesystems nothing is exec'd from; they are listed but not
// marked.
var pseudoFS = map[string]bool{
	"proc": true, "sysfs": true, "cgroup": true, "cgroup2": true, "devpts": true, "mqueue": true,
	"bpf": true, "tracefs": true, "debugfs": true, "securityfs": true, "pstore": true,
	"configfs": true, "fusectl": true, "autofs": true, "binfmt_misc": true, "nsfs": true,
	"efivarfs": true, "rpc_pipefs": true, "selinuxfs": true, "hugetlbfs": true,
}

// Bounds.
const (
	maxMountNamespaces = 1024
	maxMountinfoBytes  = 4 << 20
)

// gate is the running exec gate.
type gate struct {
	m        *Manager
	log      *slog.Logger
	deadline time.Duration
	fd       int // fanotify group
	stopFd   int // eventfd: written once when the gate stops
	wakeFd   int // eventfd: new mount namespaces to watch
	epfd     int // mountinfo descriptors (EPOLLPRI on mount changes)

	// fdMu guards fd against a late answer after close (the number could
	// name another file by then).
	fdMu   sync.RWMutex
	closed bool

	events, held, deadlineHit, ignores, ignoreErrs atomic.Uint64
	// staleHeld counts execs held past the deadline for a rewritten
	// file's old probes (holdPastStale).
	staleHeld atomic.Uint64
	maxWait   atomic.Int64

	mu      sync.Mutex
	ns      map[uint64]*nsWatch // by mount namespace inode
	byFd    map[int]*nsWatch
	pending []int      // pids whose mount namespace is to be watched
	drops   []*nsWatch // namespaces prune found gone
	fs      map[string]*FSCoverage
	nsSeen  map[uint64]bool // namespaces already requested
	// mountBuf is reused by scanMounts (one goroutine).
	mountBuf []byte
}

// nsWatch is one watched mount namespace.
type nsWatch struct {
	ino uint64
	pid int // a process in it (0: the daemon's own)
	// fd is its mountinfo, a raw descriptor: an *os.File would also be
	// registered with the Go runtime's poller, whose poll of a mount
	// table consumes the change notification before ours sees it.
	fd int
	// pidfd is the process's (-1 for the daemon's own namespace): readable
	// when it exits.
	pidfd int
	devs  map[string]bool
}

// gateFdFloor is the lowest descriptor number the fanotify group moves to
// (highFd).
const gateFdFloor = 1 << 14

// highFd moves fd above every descriptor the daemon is likely to hold
// (one uprobe link per probed binary, and their files), and returns the
// one to use. When a daemon is killed the kernel releases its files last
// opened first (the exit's deferred fputs run newest first): released
// after hundreds of uprobe links — each an RCU grace period — the group
// let the execs it held go ~5 s after the kill
// (TestExecGateFailsOpen). Above them it goes first. Where the limit on
// descriptors is too low, fd stays where it is.
func highFd(fd int) int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur <= gateFdFloor {
		return fd
	}
	hi, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, gateFdFloor)
	if err != nil {
		return fd
	}
	unix.Close(fd)
	return hi
}

// openGate creates the fanotify group and marks every filesystem of the
// daemon's mount namespace. Errors name what is missing.
func openGate(m *Manager, cfg GateConfig) (*gate, error) {
	if cfg.Deadline <= 0 {
		cfg.Deadline = DefaultGateDeadline
	}
	// FAN_CLASS_CONTENT: permission events; it needs CAP_SYS_ADMIN.
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK,
		unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("fanotify_init(FAN_CLASS_CONTENT): %w: holding execs needs CAP_SYS_ADMIN", err)
		}
		return nil, fmt.Errorf("fanotify_init(FAN_CLASS_CONTENT): %w (kernel without fanotify permission events?)", err)
	}
	fd = highFd(fd)
	g := &gate{
		m: m, log: m.log.With("part", "exec-gate"), deadline: cfg.Deadline, fd: fd, stopFd: -1, wakeFd: -1, epfd: -1,
		ns: map[uint64]*nsWatch{}, byFd: map[int]*nsWatch{}, fs: map[string]*FSCoverage{}, nsSeen: map[uint64]bool{},
	}
	fail := func(err error) (*gate, error) {
		g.close()
		return nil, err
	}
	// The root filesystem first: if the kernel refuses the event type,
	// there is no gate at all.
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, unix.FAN_OPEN_EXEC_PERM, unix.AT_FDCWD, "/"); err != nil {
		return fail(fmt.Errorf("fanotify_mark(FAN_MARK_FILESYSTEM, FAN_OPEN_EXEC_PERM) on /: %w (needs Linux 5.1+ and CAP_SYS_ADMIN)", err))
	}
	if g.stopFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail(fmt.Errorf("eventfd: %w", err))
	}
	if g.wakeFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail(fmt.Errorf("eventfd: %w", err))
	}
	if g.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail(fmt.Errorf("epoll_create1: %w", err))
	}
	for _, efd := range []int{g.stopFd, g.wakeFd} {
		if err := unix.EpollCtl(g.epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
			return fail(fmt.Errorf("epoll_ctl: %w", err))
		}
	}
	if err := g.watchNamespace(0); err != nil {
		return fail(fmt.Errorf("watch the daemon's mounts: %w", err))
	}
	// The host's, when the daemon runs in a mount namespace of its own
	// (systemd's ProtectSystem, PrivateTmp...): what it hides from the
	// daemon is still where the host's programs run from.
	if err := g.watchNamespace(1); err != nil {
		g.log.Warn("exec gate: cannot watch the mounts of PID 1's namespace; filesystems only mounted there are not covered", "err", err)
	}
	return g, nil
}

// run reads exec events and watches mounts until ctx ends, then closes
// the group: the kernel allows every exec still waiting.
func (g *gate) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); g.watchMounts() }()
	var covered []string
	for _, c := range g.status().Filesystems {
		if c.Covered {
			covered = append(covered, c.Mount+" ("+c.FSType+")")
		}
	}
	g.log.Info("exec gate active: execs of new binaries wait for their probes", "deadline", g.deadline, "covered", covered)
	go func() {
		<-ctx.Done()
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(g.stopFd, one[:])
	}()
	g.readEvents()
	wg.Wait()
	g.close()
}

func (g *gate) close() {
	if f := g.m.filter(); f != nil {
		if err := f.SetExecGate(false); err != nil {
			g.log.Warn("exec filter: gate off", "err", err)
		}
	}
	g.fdMu.Lock()
	if !g.closed {
		g.closed = true
		unix.Close(g.fd)
	}
	g.fdMu.Unlock()
	for _, fd := range []int{g.stopFd, g.wakeFd, g.epfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	g.mu.Lock()
	for _, w := range g.ns {
		for _, fd := range []int{w.fd, w.pidfd} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
	clear(g.ns)
	g.mu.Unlock()
}

// metadataSize is sizeof(struct fanotify_event_metadata).
const metadataSize = int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))

func (g *gate) readEvents() {
	buf := make([]byte, 64<<10)
	fds := []unix.PollFd{{Fd: int32(g.fd), Events: unix.POLLIN}, {Fd: int32(g.stopFd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			g.log.Error("poll fanotify", "err", err)
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		for {
			n, err := unix.Read(g.fd, buf)
			if err != nil || n <= 0 {
				if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
					g.log.Error("read fanotify", "err", err)
					return
				}
				break
			}
			for off := 0; off+metadataSize <= n; {
				md := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
				if md.Vers != unix.FANOTIFY_METADATA_VERSION || int(md.Event_len) < metadataSize || off+int(md.Event_len) > n {
					g.log.Error("malformed fanotify event", "version", md.Vers, "len", md.Event_len)
					break
				}
				g.event(int(md.Fd), int(md.Pid), md.Mask)
				off += int(md.Event_len)
			}
		}
	}
}

// heldExec is one exec waiting for an answer.
type heldExec struct {
	g        *gate
	fd       int
	at       time.Time
	answered atomic.Bool
}

// answer allows the exec, once; it reports whether this call answered.
func (h *heldExec) answer() bool {
	if !h.answered.CompareAndSwap(false, true) {
		return false
	}
	h.g.respond(h.fd)
	if w := int64(time.Since(h.at)); w > h.g.maxWait.Load() {
		h.g.maxWait.Store(w) // racy max: a statistic
	}
	return true
}

// respond answers FAN_ALLOW for the event of fd. The gate never denies:
// mapsentry observes, it must not stop a program from running.
func (g *gate) respond(fd int) {
	g.fdMu.RLock()
	defer g.fdMu.RUnlock()
	if g.closed {
		return // the kernel allowed it when the group closed
	}
	var r [8]byte
	binary.NativeEndian.PutUint32(r[:], uint32(int32(fd)))
	binary.NativeEndian.PutUint32(r[4:], unix.FAN_ALLOW)
	if _, err := unix.Write(g.fd, r[:]); err != nil {
		g.log.Warn("answer exec event", "err", err)
	}
}

// event handles one permission event: the exec waits until respond.
func (g *gate) event(fd, pid int, mask uint64) {
	g.events.Add(1)
	if fd < 0 {
		return // queue overflow: only notification events are dropped
	}
	h := &heldExec{g: g, fd: fd, at: time.Now()}
	if mask&unix.FAN_OPEN_EXEC_PERM == 0 {
		h.answer()
		unix.Close(fd)
		return
	}
	if pid > 0 {
		g.noteProcess(pid)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		h.answer()
		unix.Close(fd)
		return
	}
	key := FileKey{Dev: st.Dev, Ino: st.Ino}
	gen := FileGen{MtimeNS: st.Mtim.Nano(), CtimeNS: st.Ctim.Nano(), Size: st.Size}
	if key == g.m.self || g.m.settled(key, gen) {
		h.answer()
		g.ignore(fd)
		unix.Close(fd)
		return
	}
	g.held.Add(1)
	timer := time.AfterFunc(g.deadline, func() {
		g.holdPastStale(h, key, gen)
		if h.answer() {
			g.deadlineHit.Add(1)
			if g.log.Enabled(context.Background(), slog.LevelDebug) {
				path, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
				g.log.Debug("exec allowed at the deadline, before its binary was settled", "path", path, "deadline", g.deadline)
			}
		}
	})
	s := sighting{via: ViaGate, path: "/proc/self/fd/" + strconv.Itoa(fd), key: key, gen: gen, at: h.at}
	s.finish = func(settled bool) {
		timer.Stop()
		h.answer()
		if settled {
			g.ignore(fd)
		}
	}
	s.release = func() { unix.Close(fd) }
	if !g.m.q.push(prioGate, s) {
		timer.Stop()
		h.answer()
		unix.Close(fd)
	}
}

// replaceWait bounds how long an exec of a file rewritten in place waits
// past the deadline for the probes of its old contents to be detached
// (an RCU grace period per link: ~50 ms on the 2-vCPU VMs).
const replaceWait = time.Second

// holdPastStale keeps an exec of a file rewritten in place waiting, past
// the deadline, while the probes of its old contents are still in the
// kernel (Manager.staleProbes): allowed then, it would map the file with
// breakpoints at the old offsets, mid-instruction in the new code. Once
// they are gone its new probes get one more deadline. Bounded by
// replaceWait from the exec; it returns at once for any other exec.
func (g *gate) holdPastStale(h *heldExec, key FileKey, gen FileGen) {
	if !g.m.staleProbes(key, gen) {
		return
	}
	g.staleHeld.Add(1)
	until := h.at.Add(replaceWait)
	for !h.answered.Load() && time.Now().Before(until) && g.m.staleProbes(key, gen) {
		time.Sleep(time.Millisecond)
	}
	again := time.Now().Add(g.deadline)
	for !h.answered.Load() && time.Now().Before(until) && time.Now().Before(again) {
		time.Sleep(time.Millisecond)
	}
}

// ignore marks the file of fd: its execs no longer raise events until it
// is modified (no FAN_MARK_IGNORED_SURV_MODIFY: a rewritten binary must
// be held and read again).
func (g *gate) ignore(fd int) {
	g.fdMu.RLock()
	defer g.fdMu.RUnlock()
	if g.closed {
		return
	}
	if err := unix.FanotifyMark(g.fd, unix.FAN_MARK_ADD|unix.FAN_MARK_IGNORED_MASK, unix.FAN_OPEN_EXEC_PERM, fd, ""); err != nil {
		g.ignoreErrs.Add(1)
		return
	}
	g.ignores.Add(1)
}

// unignore removes the ignore mark of f (probes detached: hold its next
// exec again).
func (g *gate) unignore(f *os.File) {
	g.fdMu.RLock()
	defer g.fdMu.RUnlock()
	if g.closed {
		return
	}
	_ = unix.FanotifyMark(g.fd, unix.FAN_MARK_REMOVE|unix.FAN_MARK_IGNORED_MASK, unix.FAN_OPEN_EXEC_PERM, int(f.Fd()), "")
}

// mountNS returns the mount namespace inode of pid (0: the daemon).
func mountNS(pid int) (uint64, error) {
	p := "/proc/self/ns/mnt"
	if pid > 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/ns/mnt"
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// noteProcess asks for pid's mount namespace to be watched if it is new:
// a container's own mounts (a tmpfs, an overlay mounted inside it) are
// marked as soon as one of its processes execs anything.
func (g *gate) noteProcess(pid int) {
	ns, err := mountNS(pid)
	if err != nil {
		return
	}
	g.mu.Lock()
	if g.nsSeen[ns] || len(g.nsSeen) >= maxMountNamespaces {
		g.mu.Unlock()
		return
	}
	g.nsSeen[ns] = true
	g.pending = append(g.pending, pid)
	g.mu.Unlock()
	g.wake()
}

// wake has the mount watcher look at pending and drops.
func (g *gate) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(g.wakeFd, one[:])
}

// watchMounts marks new filesystems as mounts appear, in every watched
// mount namespace (mountinfo raises EPOLLPRI on each change).
func (g *gate) watchMounts() {
	evs := make([]unix.EpollEvent, 16)
	for {
		n, err := unix.EpollWait(g.epfd, evs, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			g.log.Error("epoll_wait mounts", "err", err)
			return
		}
		for _, ev := range evs[:n] {
			switch int(ev.Fd) {
			case g.stopFd:
				return
			case g.wakeFd:
				var b [8]byte
				_, _ = unix.Read(g.wakeFd, b[:])
				g.mu.Lock()
				pids, drops := g.pending, g.drops
				g.pending, g.drops = nil, nil
				g.mu.Unlock()
				for _, w := range drops {
					g.unwatch(w)
				}
				for _, pid := range pids {
					if err := g.watchNamespace(pid); err != nil {
						g.log.Debug("watch mount namespace", "pid", pid, "err", err)
					}
				}
			default:
				g.mu.Lock()
				w := g.byFd[int(ev.Fd)]
				g.mu.Unlock()
				switch {
				case w == nil:
				case int(ev.Fd) == w.pidfd:
					g.log.Debug("mount namespace's process exited", "ns", w.ino, "pid", w.pid)
					g.unwatch(w)
				default:
					g.log.Debug("mounts changed", "ns", w.ino, "pid", w.pid)
					g.scanMounts(w)
				}
			}
		}
	}
}

// watchNamespace starts watching the mount namespace of pid (0: the
// daemon's) and marks its filesystems.
func (g *gate) watchNamespace(pid int) error {
	ino, err := mountNS(pid)
	if err != nil {
		return err
	}
	g.mu.Lock()
	_, dup := g.ns[ino]
	g.nsSeen[ino] = true
	g.mu.Unlock()
	if dup {
		return nil
	}
	w := &nsWatch{ino: ino, pid: pid, fd: -1, pidfd: -1, devs: map[string]bool{}}
	p := "/proc/self/mountinfo"
	if pid > 0 {
		// The mountinfo descriptor holds the namespace, and so a finished
		// container's filesystems (a block device stays busy): it is held
		// only while a process in it lives, the oldest ancestor of pid
		// still in it (the container's init, usually), whose pidfd says
		// when it exits.
		w.pid = oldestInNamespace(pid, ino)
		if w.pidfd, err = unix.PidfdOpen(w.pid, 0); err != nil {
			g.mu.Lock()
			delete(g.nsSeen, ino)
			g.mu.Unlock()
			return fmt.Errorf("pidfd_open %d: %w", w.pid, err)
		}
		if cur, err := mountNS(w.pid); err != nil || cur != ino {
			unix.Close(w.pidfd)
			g.mu.Lock()
			delete(g.nsSeen, ino)
			g.mu.Unlock()
			return fmt.Errorf("pid %d left mount namespace %d", w.pid, ino)
		}
		p = "/proc/" + strconv.Itoa(w.pid) + "/mountinfo"
	}
	if w.fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		g.unwatch(w)
		return fmt.Errorf("open %s: %w", p, err)
	}
	if err := unix.EpollCtl(g.epfd, unix.EPOLL_CTL_ADD, w.fd, &unix.EpollEvent{Events: unix.EPOLLPRI, Fd: int32(w.fd)}); err != nil {
		g.unwatch(w)
		return fmt.Errorf("epoll_ctl %s: %w", p, err)
	}
	if w.pidfd >= 0 {
		if err := unix.EpollCtl(g.epfd, unix.EPOLL_CTL_ADD, w.pidfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(w.pidfd)}); err != nil {
			g.unwatch(w)
			return fmt.Errorf("epoll_ctl pidfd: %w", err)
		}
	}
	g.mu.Lock()
	g.ns[ino], g.byFd[w.fd] = w, w
	if w.pidfd >= 0 {
		g.byFd[w.pidfd] = w
	}
	g.filterNS(ino, true)
	g.mu.Unlock()
	g.log.Debug("watching mount namespace", "ns", ino, "pid", w.pid)
	g.scanMounts(w)
	return nil
}

// unwatch stops watching w's namespace and releases it; the next exec in
// it (if it is still in use) watches it again. Only the mount watcher
// calls it: it owns the descriptors.
func (g *gate) unwatch(w *nsWatch) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, fd := range []int{w.fd, w.pidfd} {
		if fd < 0 {
			continue
		}
		_ = unix.EpollCtl(g.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		delete(g.byFd, fd)
		unix.Close(fd)
	}
	w.fd, w.pidfd = -1, -1
	if cur, ok := g.ns[w.ino]; !ok || cur == w {
		delete(g.ns, w.ino)
		delete(g.nsSeen, w.ino)
		g.filterNS(w.ino, false)
	}
	g.dropUnmounted()
}

// oldestInNamespace walks up from pid through its ancestors in mount
// namespace ino (at most 64) and returns the last one.
func oldestInNamespace(pid int, ino uint64) int {
	for i := 0; i < 64; i++ {
		ppid := parentPID(pid)
		if ppid <= 1 {
			return pid
		}
		if ns, err := mountNS(ppid); err != nil || ns != ino {
			return pid
		}
		pid = ppid
	}
	return pid
}

// parentPID reads the PPid of pid from /proc (0 when unknown).
func parentPID(pid int) int {
	b, err := readBounded("/proc/"+strconv.Itoa(pid)+"/stat", 4096)
	if err != nil {
		return 0
	}
	// Field 4, after the command in parentheses (which may hold anything).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// scanMounts reads w's mount table and marks every filesystem not marked
// yet. Only the mount watcher calls it (and openGate, before it runs).
func (g *gate) scanMounts(w *nsWatch) {
	if g.mountBuf == nil {
		g.mountBuf = make([]byte, 64<<10)
	}
	n, err := readAll(w.fd, g.mountBuf)
	for err == errMountinfoFull && len(g.mountBuf) < maxMountinfoBytes {
		g.mountBuf = make([]byte, 2*len(g.mountBuf))
		n, err = readAll(w.fd, g.mountBuf)
	}
	if err != nil {
		g.log.Debug("read mountinfo", "pid", w.pid, "err", err)
		return
	}
	mounts := parseMountinfo(string(g.mountBuf[:n]))
	nsName := ""
	if w.pid > 0 {
		nsName = fmt.Sprintf("mnt:[%d]", w.ino)
	}
	now := map[string]bool{}
	for _, mt := range mounts {
		now[mt.dev] = true
		g.mu.Lock()
		_, done := g.fs[mt.dev]
		g.mu.Unlock()
		if done {
			continue
		}
		c := &FSCoverage{Dev: mt.dev, FSType: mt.fstype, Mount: mt.point, Namespace: nsName}
		switch {
		case pseudoFS[mt.fstype]:
			c.Reason = "pseudo filesystem: nothing is executed from it"
		default:
			path := mt.point
			if w.pid > 0 {
				path = "/proc/" + strconv.Itoa(w.pid) + "/root" + mt.point
			}
			err := unix.FanotifyMark(g.fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, unix.FAN_OPEN_EXEC_PERM, unix.AT_FDCWD, path)
			if err != nil {
				c.Reason = "fanotify_mark: " + err.Error()
			} else {
				c.Covered = true
				g.filterDev(mt.dev, true)
				g.log.Debug("filesystem covered", "dev", mt.dev, "fstype", mt.fstype, "mount", mt.point, "namespace", nsName)
			}
		}
		g.mu.Lock()
		g.fs[mt.dev] = c
		g.mu.Unlock()
	}
	g.mu.Lock()
	w.devs = now
	g.dropUnmounted()
	g.mu.Unlock()
}

// dropUnmounted forgets filesystems no watched namespace mounts any more
// (the kernel dropped their marks with the superblock). Called with g.mu.
func (g *gate) dropUnmounted() {
	for dev := range g.fs {
		used := false
		for _, w := range g.ns {
			used = used || w.devs[dev]
		}
		if !used {
			if g.fs[dev].Covered {
				g.filterDev(dev, false)
			}
			delete(g.fs, dev)
		}
	}
}

// prune stops watching namespaces whose process is gone and whose exit
// the watcher did not see yet (a backstop to the pidfds).
func (g *gate) prune() {
	g.mu.Lock()
	var gone []*nsWatch
	for ino, w := range g.ns {
		if w.pidfd < 0 {
			continue
		}
		if cur, err := mountNS(w.pid); err != nil || cur != ino {
			gone = append(gone, w)
		}
	}
	g.drops = append(g.drops, gone...)
	g.mu.Unlock()
	if len(gone) > 0 {
		g.wake() // the watcher owns the descriptors
	}
}

// filterNS tells the BPF exec filter that mount namespace ino is watched
// (its execs of known files need no event) or no longer.
func (g *gate) filterNS(ino uint64, watched bool) {
	if f := g.m.filter(); f != nil {
		if err := f.WatchMountNS(uint32(ino), watched); err != nil {
			g.log.Debug("exec filter: mount namespace", "ns", ino, "err", err)
		}
	}
}

// filterDev tells the BPF exec filter that filesystem dev ("major:minor")
// is covered by the gate (an exec of a new file there was held until its
// probes were in: its event need not wake the daemon) or no longer.
func (g *gate) filterDev(dev string, covered bool) {
	f := g.m.filter()
	major, minor, ok := parseDev(dev)
	if f == nil || !ok {
		return
	}
	if err := f.GateDev(major, minor, covered); err != nil {
		g.log.Debug("exec filter: gated filesystem", "dev", dev, "err", err)
	}
}

func (g *gate) status() GateStatus {
	st := GateStatus{
		State: GateActive, DeadlineNS: int64(g.deadline),
		Events: g.events.Load(), Held: g.held.Load(), DeadlineHit: g.deadlineHit.Load(), MaxWaitNS: g.maxWait.Load(),
		HeldPastDeadline: g.staleHeld.Load(),
		IgnoreMarks:      g.ignores.Load(), IgnoreMarkErrors: g.ignoreErrs.Load(),
	}
	g.mu.Lock()
	st.MountNamespaces = len(g.ns)
	for _, c := range g.fs {
		st.Filesystems = append(st.Filesystems, *c)
	}
	g.mu.Unlock()
	sort.Slice(st.Filesystems, func(i, j int) bool { return st.Filesystems[i].Dev < st.Filesystems[j].Dev })
	return st
}

// readAll reads fd from its start into buf, at most len(buf) bytes (a
// seq file: reading from 0 regenerates it).
func readAll(fd int, buf []byte) (int, error) {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return 0, err
	}
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, nil
		}
		n += m
	}
	return n, errMountinfoFull
}

// errMountinfoFull: the mount table did not fit the buffer.
var errMountinfoFull = errors.New("mount table larger than the buffer")
