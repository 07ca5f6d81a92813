// Package instance owns "one mapsentry daemon per host". Two daemons whose
// scopes overlap both freeze a crashing process and each resumes it after
// its own capture (two reports of one crash, and a capture cut short), and
// a starting daemon resumes every process the frozen records name — ones
// a running daemon may be holding mid-capture. So the daemon takes a lock
// before it touches anything: an abstract unix socket named after its
// instance (host-wide identity) and flock(2) on its state and runtime
// directories (whoever shares them, whatever the instance name). The lock
// is held until the daemon exits, and the kernel releases all of it when
// the daemon dies, however it dies.
//
// Why an abstract socket rather than a BPF pin: a pin outlives a killed
// daemon (a stale lock needing a liveness check, itself racy with PID
// reuse), needs a writable bpffs (ProtectSystem=strict makes /sys/fs/bpf
// read-only in the unit) and says nothing about who holds it. An abstract
// socket needs no file system, disappears with its process, and a client
// connecting to it learns the holder's PID from the kernel (SO_PEERCRED),
// so the refusal can name it. Its limit: abstract names are per network
// namespace, so a daemon in a container with its own network namespace is
// not seen (the directory locks still catch a shared state directory).
package instance

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Info is what a running daemon tells another one that tries to start.
type Info struct {
	PID      int       `json:"pid"`
	Instance string    `json:"instance"`
	StateDir string    `json:"state_dir"`
	Socket   string    `json:"socket"`
	Since    time.Time `json:"since"`
}

// HeldError is the refusal: someone holds the instance or a directory.
type HeldError struct {
	// What is held: `instance "default"` or `directory /var/lib/mapsentry`.
	What string
	// PID holds it: from the kernel (SO_PEERCRED, /proc/locks); 0 when it
	// could not be told (a process in another PID namespace).
	PID int
	// Holder is what the holder said about itself, when it answered.
	Holder *Info
}

func (e *HeldError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = fmt.Sprintf("pid %d", e.PID)
	}
	msg := fmt.Sprintf("%s is held by %s", e.What, who)
	if h := e.Holder; h != nil {
		msg = fmt.Sprintf("%s is held by mapsentry daemon pid %d (instance %q, state dir %s, socket %s, running since %s)",
			e.What, e.PID, h.Instance, h.StateDir, h.Socket, h.Since.Format(time.RFC3339))
	}
	return msg + ": one mapsentry daemon per host — stop that one first, or give this one its own " +
		"instance (config instance), state_dir and runtime_dir, and a discovery.include disjoint from the first's"
}

// Lock is a held instance lock. Close releases it.
type Lock struct {
	ln   *net.UnixListener
	dirs []*os.File
	wg   sync.WaitGroup
}

// Address is the abstract unix socket address of an instance.
func Address(instance string) string { return "@mapsentry/instance/" + instance }

// Acquire takes the lock of instance name and of dirs (empty entries,
// duplicates and directories that do not exist are skipped: create them
// first), for a daemon that describes itself as self. It fails with a *HeldError naming
// the holder when another process has any of them.
func Acquire(name string, dirs []string, self Info) (*Lock, error) {
	l := &Lock{}
	var err error
	if l.ln, err = listen(name); err != nil {
		return nil, err
	}
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.serve(self) }()
	if err := l.lockDirs(dirs); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// LockDirs takes only the directory locks: what `mapsentry resume-frozen`
// holds while it resumes the processes a dead daemon's records name, so
// that it never runs beside a live daemon of these directories.
func LockDirs(dirs ...string) (*Lock, error) {
	l := &Lock{}
	if err := l.lockDirs(dirs); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Close releases the lock.
func (l *Lock) Close() error {
	var errs []error
	if l.ln != nil {
		errs = append(errs, l.ln.Close())
	}
	l.wg.Wait()
	for _, d := range l.dirs {
		errs = append(errs, d.Close()) // closing the last fd drops the flock
	}
	return errors.Join(errs...)
}

// listen binds the instance's abstract name; in use, it asks the holder
// who it is. A holder that went away in between is retried.
func listen(name string) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Name: Address(name), Net: "unix"}
	var lastErr error
	for try := 0; try < 3; try++ {
		ln, err := net.ListenUnix("unix", addr)
		if err == nil {
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("take instance lock %s: %w", addr.Name, err)
		}
		held, err := ask(addr)
		if err == nil {
			held.What = fmt.Sprintf("instance %q", name)
			return nil, held
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("instance lock %s is in use, but its holder does not answer: %w", addr.Name, lastErr)
}

// maxInfo bounds the holder's answer.
const maxInfo = 4096

// ask connects to a held instance socket: the kernel says the holder's
// PID, the holder says the rest.
func ask(addr *net.UnixAddr) (*HeldError, error) {
	c, err := net.DialUnix("unix", nil, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	held := &HeldError{}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		if cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); credErr == nil {
			held.PID = int(cred.Pid)
		}
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, fmt.Errorf("peer credentials: %w", credErr)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(&limited{r: c, n: maxInfo}).ReadString('\n')
	var info Info
	if err == nil && json.Unmarshal([]byte(line), &info) == nil {
		held.Holder = &info
	}
	return held, nil
}

type limited struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("answer too long")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// serve answers every connection with self, until the listener closes.
func (l *Lock) serve(self Info) {
	b, _ := json.Marshal(self)
	b = append(b, '\n')
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(b)
		c.Close()
	}
}

func (l *Lock) lockDirs(dirs []string) error {
	seen := map[string]bool{}
	for _, dir := range dirs {
		if dir == "" || seen[dir] {
			continue
		}
		seen[dir] = true
		// Opened read-only: a directory on a read-only file system can
		// still be locked (flock needs no write access).
		d, err := os.Open(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("lock directory %s: %w", dir, err)
		}
		if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			d.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return &HeldError{What: "directory " + dir, PID: flockHolder(dir)}
			}
			return fmt.Errorf("lock directory %s: %w", dir, err)
		}
		l.dirs = append(l.dirs, d)
	}
	return nil
}

// maxProcLocks bounds the read of /proc/locks.
const maxProcLocks = 1 << 20

// flockHolder finds the PID holding a flock on path in /proc/locks
// ("1: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE 0 EOF", major and minor in
// hex), or 0.
func flockHolder(path string) int {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(&limited{r: f, n: maxProcLocks})
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue // "->" lines are waiters, not holders
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil {
			return pid
		}
	}
	return 0
}
