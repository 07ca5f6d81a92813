package procmem

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// InitPIDNamespace is the nsfs inode of the initial (host) PID namespace,
// fixed by the kernel (PROC_PID_INIT_INO).
const InitPIDNamespace = 0xEFFFFFFC

// ErrOtherNamespace means a PID was numbered in another PID namespace than
// the caller's: here it names nothing, or a different process.
var ErrOtherNamespace = errors.New("pid of another PID namespace")

// OwnPIDNamespace is the nsfs inode of the calling process's PID namespace,
// read through /proc/self (which names this process whichever namespace the
// mounted /proc belongs to).
func OwnPIDNamespace() (uint32, error) {
	fi, err := os.Stat("/proc/self/ns/pid")
	if err != nil {
		return 0, fmt.Errorf("own PID namespace: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Ino == 0 || st.Ino > 1<<32-1 {
		return 0, errors.New("own PID namespace: unexpected inode of /proc/self/ns/pid")
	}
	return uint32(st.Ino), nil
}

// CheckProcMount returns an error unless the /proc mounted here belongs to
// the caller's own PID namespace. PIDs that this process gets from the
// kernel (getpid, BPF translated to its namespace) and uses with kill(2)
// are its namespace's; a /proc of an outer namespace (e.g. `unshare -p -f`
// without --mount-proc) numbers every process differently, so each lookup
// would read another process or none.
func CheckProcMount() error {
	self, err := os.Readlink("/proc/self")
	if err != nil {
		return fmt.Errorf("read /proc/self: %w", err)
	}
	if pid := os.Getpid(); self != strconv.Itoa(pid) {
		return fmt.Errorf("/proc belongs to another PID namespace: this process is PID %d, /proc calls it %s; "+
			"mount a /proc of its own PID namespace (unshare --pid --fork --mount-proc, or a container's own /proc)", pid, self)
	}
	return nil
}

// checkNamespace returns ErrOtherNamespace (wrapped) unless ns is 0
// (unknown: recorded before namespaces were) or the caller's namespace.
func checkNamespace(pid int, ns uint32) error {
	if ns == 0 {
		return nil
	}
	own, err := OwnPIDNamespace()
	if err != nil {
		return err
	}
	if own != ns {
		return fmt.Errorf("pid %d was recorded in PID namespace %d, this process is in %d: %w", pid, ns, own, ErrOtherNamespace)
	}
	return nil
}
