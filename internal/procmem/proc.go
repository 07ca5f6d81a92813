package procmem

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrGone means the process no longer exists, or its PID now belongs to a
// different process (start time changed).
var ErrGone = errors.New("process gone")

// Stat is the part of /proc/PID/stat (or /proc/PID/task/TID/stat) we use.
type Stat struct {
	PID   int
	Comm  string
	State byte // R, S, D, T (stopped), t (traced), Z, X, ...
	PPID  int
	// StartTime is field 22: clock ticks after boot. (PID, StartTime) is a
	// process identity that survives PID reuse.
	StartTime uint64
	Threads   int
}

// ReadStat parses /proc/PID/stat, or a task's stat when path names one.
func ReadStat(path string) (Stat, error) {
	var buf [statMax]byte
	b, err := readSmall(path, buf[:])
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return Stat{}, fmt.Errorf("read %s: %w", path, ErrGone)
		}
		return Stat{}, fmt.Errorf("read %s: %w", path, err)
	}
	return ParseStat(b)
}

// statMax bounds a stat file read into a stack buffer: 52 fields of at
// most 20 digits and a 64-byte comm fit; a longer one is read whole.
const statMax = 2048

// readSmall reads a small /proc file into buf, in three system calls
// where os.ReadFile takes about nine (fstat, fcntl, the poller): the
// identity checks of a rescan read one per known process. A file that
// fills buf is read again whole.
func readSmall(path string, buf []byte) ([]byte, error) {
	fd, err := openRead(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case m == 0:
			return buf[:n], nil
		}
		n += m
	}
	return os.ReadFile(path)
}

// openRead opens path read-only, retrying on EINTR.
func openRead(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// ParseStat parses the contents of a stat file. comm may contain spaces and
// parentheses, so fields are counted from the last ')'.
func ParseStat(b []byte) (Stat, error) {
	var s Stat
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open || end+2 >= len(b) {
		return s, fmt.Errorf("parse stat: malformed %q", truncate(b))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return s, fmt.Errorf("parse stat pid: %w", err)
	}
	s.PID, s.Comm = pid, string(b[open+1:end])
	f := strings.Fields(string(b[end+2:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 20 || len(f[0]) != 1 {
		return s, fmt.Errorf("parse stat: %d fields after comm", len(f))
	}
	s.State = f[0][0]
	s.PPID, _ = strconv.Atoi(f[1])
	s.Threads, _ = strconv.Atoi(f[17])
	if s.StartTime, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return s, fmt.Errorf("parse stat starttime: %w", err)
	}
	return s, nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// Identity is a process that survives PID reuse checks.
type Identity struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	// PIDNS is the nsfs inode of the PID namespace PID is numbered in; 0:
	// the caller's own. An identity that outlives the process holding it
	// (a durable frozen record) carries it, so that a PID is never acted on
	// from another namespace, where it names another process.
	PIDNS uint32 `json:"pid_ns,omitempty"`
}

// Check returns ErrGone unless PID still names the same process, and
// ErrOtherNamespace when PID belongs to another PID namespace than the
// caller's.
func (id Identity) Check() error {
	if err := checkNamespace(id.PID, id.PIDNS); err != nil {
		return err
	}
	s, err := ReadStat("/proc/" + strconv.Itoa(id.PID) + "/stat")
	if err != nil {
		return err
	}
	if s.StartTime != id.StartTime {
		return fmt.Errorf("pid %d started at %d, want %d: %w", id.PID, s.StartTime, id.StartTime, ErrGone)
	}
	if s.State == 'Z' || s.State == 'X' {
		return fmt.Errorf("pid %d is exiting: %w", id.PID, ErrGone)
	}
	return nil
}

// Signal sends sig to the process only if it is still the same process.
// The check and the kill are not atomic, but the window is microseconds and
// a PID is reused only after the old process was reaped and the PID space
// wrapped around.
func (id Identity) Signal(sig syscall.Signal) error {
	if err := id.Check(); err != nil {
		return err
	}
	if err := syscall.Kill(id.PID, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal pid %d: %w", id.PID, ErrGone)
		}
		return fmt.Errorf("signal pid %d: %w", id.PID, err)
	}
	return nil
}

// Resume sends SIGCONT to the process if it is still the same process. It
// returns an error wrapping ErrGone when the process is gone (or its PID
// names another one), and ErrOtherNamespace for a PID of another
// namespace: nothing was resumed, and callers must not say it was (the
// latter process may still be stopped).
func (id Identity) Resume() error {
	return id.Signal(syscall.SIGCONT)
}

// ThreadStates returns the state letter of every thread of pid.
func ThreadStates(pid int) (map[int]byte, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("list threads of %d: %w", pid, ErrGone)
		}
		return nil, fmt.Errorf("list threads of %d: %w", pid, err)
	}
	out := make(map[int]byte, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := ReadStat(dir + "/" + e.Name() + "/stat")
		if err != nil {
			continue // thread exited between ReadDir and here
		}
		out[tid] = s.State
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("threads of %d: none: %w", pid, ErrGone)
	}
	return out, nil
}

// AllStopped reports whether every thread of pid is in state T or t.
func AllStopped(pid int) (bool, error) {
	st, err := ThreadStates(pid)
	if err != nil {
		return false, err
	}
	for _, s := range st {
		if s != 'T' && s != 't' {
			return false, nil
		}
	}
	return true, nil
}

// maxStopPoll is the longest wait between two polls of the threads' states.
const maxStopPoll = 400 * time.Microsecond

// WaitStopped polls until every thread of pid is stopped or timeout passes.
// It returns how long it waited and whether all threads stopped.
func WaitStopped(pid int, timeout time.Duration) (time.Duration, bool, error) {
	start := time.Now()
	delay := 100 * time.Microsecond
	for {
		ok, err := AllStopped(pid)
		if err != nil || ok {
			return time.Since(start), ok, err
		}
		if time.Since(start) >= timeout {
			return time.Since(start), false, nil
		}
		time.Sleep(delay)
		// Every poll of a stop adds up to one delay to the freeze: keep it
		// short (a poll reads one stat file per thread, ~10 us each).
		if delay < maxStopPoll {
			delay *= 2
		}
	}
}

// Freeze stops a live process for inspection (SIGSTOP, then waits for every
// thread to stop) and returns a resume function that must always be called;
// it sends SIGCONT only if the identity still matches.
func Freeze(id Identity, timeout time.Duration) (resume func() error, err error) {
	if err := id.Signal(syscall.SIGSTOP); err != nil {
		return func() error { return nil }, err
	}
	resume = id.Resume
	if _, ok, err := WaitStopped(id.PID, timeout); err != nil {
		return resume, err
	} else if !ok {
		return resume, fmt.Errorf("pid %d: not all threads stopped within %s", id.PID, timeout)
	}
	return resume, nil
}

// IdentityOf reads the current identity of pid.
func IdentityOf(pid int) (Identity, error) {
	s, err := ReadStat("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, StartTime: s.StartTime}, nil
}
