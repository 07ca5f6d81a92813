package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// syscallProbe is a system call the daemon makes, called at start-up with
// arguments the kernel itself rejects at once with a known errno: getting
// that errno proves the call reaches the kernel. Anything else (EPERM, or
// the errno a filter was set up to return) is a filter in front of it — a
// seccomp filter (systemd's SystemCallFilter=, a container runtime's
// profile) — and the daemon says so, instead of blaming the kernel for a
// feature it has. (A filter whose action kills the caller kills the daemon
// here, as the real call would later; systemd then logs signal SYS.)
type syscallProbe struct {
	name   string
	nr     uintptr
	args   [3]uintptr
	kernel unix.Errno // what the kernel answers to args
	fatal  bool
	why    string
}

const all = ^uintptr(0) // -1 as an argument

func neededSyscalls() []syscallProbe {
	return []syscallProbe{
		// bpf(-1, NULL, 0): no such command.
		{"bpf", unix.SYS_BPF, [3]uintptr{all, 0, 0}, unix.EINVAL, true,
			"load the BPF programs and attach them"},
		// ptrace(-1, 0, ...): there is no pid 0 to trace.
		{"ptrace", unix.SYS_PTRACE, [3]uintptr{all, 0, 0}, unix.ESRCH, false,
			"hold a crashing process (PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_GETREGS, PTRACE_GETEVENTMSG, " +
				"PTRACE_DETACH: docs/freeze.md): without it crashes are captured without a hold, and cores and " +
				"live dumps lose their registers"},
		// perf_event_open(NULL, ...): the attribute cannot be read.
		{"perf_event_open", unix.SYS_PERF_EVENT_OPEN, [3]uintptr{0, 0, all}, unix.EFAULT, false,
			"attach perf-event uprobes, the fallback where uprobe_multi links (Linux 6.6+) are missing"},
	}
}

// syscallChecks is one check per needed system call. canBPF says the
// process has CAP_BPF (or CAP_SYS_ADMIN): kernels before 6.5 answer bpf()
// EPERM without it, whatever the command, which the capability check
// already explains.
func syscallChecks(canBPF bool) []Check {
	var out []Check
	for _, p := range neededSyscalls() {
		c := Check{Name: "syscall " + p.name, OK: true, Fatal: p.fatal}
		_, _, errno := unix.Syscall6(p.nr, p.args[0], p.args[1], p.args[2], all, 0, 0)
		if p.nr == unix.SYS_BPF && !canBPF && errno == unix.EPERM {
			c.Detail = "not checked: CAP_BPF is missing"
		} else if errno != p.kernel {
			c.OK = false
			c.Detail = fmt.Sprintf("system call %s refused before it reached the kernel (%s, where the kernel answers %s): "+
				"%s; needed to %s. Allow it: systemd SystemCallFilter=, systemd-nspawn --system-call-filter=, "+
				"a container's seccomp profile (docs/security.md)", p.name, errnoName(errno), errnoName(p.kernel),
				seccompState(), p.why)
		}
		out = append(out, c)
	}
	return out
}

func errnoName(e unix.Errno) string {
	if e == 0 {
		return "success"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

// seccompState says whether a seccomp filter is on this process
// (/proc/self/status Seccomp: 0 none, 1 strict, 2 filter).
func seccompState() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "seccomp state unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Seccomp:"); ok {
			switch strings.TrimSpace(v) {
			case "0":
				return "no seccomp filter is on this process"
			case "2":
				return "a seccomp filter is on this process"
			default:
				return "seccomp mode " + strings.TrimSpace(v)
			}
		}
	}
	return "seccomp state unknown"
}

// featureDetail explains a failed kernel feature probe: the kernel lacks
// the feature, or something refused the probe — which is not the same fix.
// missingCaps are the capabilities the capability checks found missing:
// the first suspect of a refusal.
func featureDetail(what string, err error, missingCaps []string) string {
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Sprintf("kernel lacks %s (%v)", what, err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		why := seccompState() + ", " + lockdownState()
		if len(missingCaps) > 0 {
			why = "capabilities missing: " + strings.Join(missingCaps, ", ") + "; " + why
		}
		return fmt.Sprintf("permission refused while probing for %s (%v): not a missing kernel feature; %s", what, err, why)
	}
	return fmt.Sprintf("probing for %s failed (%v)", what, err)
}

// lockdownState is the kernel lockdown mode, e.g. "lockdown none".
func lockdownState() string {
	b, err := os.ReadFile("/sys/kernel/security/lockdown")
	if err != nil {
		return "lockdown mode unknown (no securityfs here)"
	}
	s := string(b)
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			return "lockdown " + s[i+1:i+j]
		}
	}
	return "lockdown " + strings.TrimSpace(s)
}
