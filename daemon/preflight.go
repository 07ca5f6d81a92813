package daemon

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// Check is one start-up check of a capability or kernel feature. Fatal
// checks that fail stop the daemon; the others leave it running degraded,
// said once at start-up and in /v1/status.
type Check = apitype.Check

// capability is one capability the daemon may need, and why.
type capability struct {
	name string
	bit  int
	// fatal: the daemon refuses to start without it; freezeOnly: only
	// when freeze.enabled.
	fatal, freezeOnly bool
	why               string
}

// neededCapabilities is the set the unit grants
// (deploy/systemd/mapsentry.service, justified in docs/security.md).
// Nothing else is needed.
func neededCapabilities() []capability {
	return []capability{
		{"CAP_BPF", unix.CAP_BPF, true, false, "load the BPF programs and maps"},
		{"CAP_PERFMON", unix.CAP_PERFMON, true, false, "attach the crash uprobes and raw tracepoints"},
		{"CAP_KILL", unix.CAP_KILL, true, true, "resume (SIGCONT) frozen processes of other users; without it a frozen process " +
			"would stay stopped, so the daemon refuses to freeze (freeze.enabled=false observes only)"},
		{"CAP_SYS_PTRACE", unix.CAP_SYS_PTRACE, false, false, "open /proc/PID/exe and read /proc/PID/mem of processes of other users " +
			"or with more capabilities; without it their binaries get no probes and their crashes are not captured"},
		{"CAP_DAC_READ_SEARCH", unix.CAP_DAC_READ_SEARCH, false, false, "read executables the daemon's user may not read " +
			"(e.g. mode 0750 root:app); without it such binaries get no probes"},
		{"CAP_SYS_NICE", unix.CAP_SYS_NICE, false, true, "raise a held process's threads to freeze.nice until they stop; " +
			"without it a hold in a crash storm waits longer for each thread to get a CPU (reports say so in capture.errors)"},
	}
}

// CapabilityNames lists the capabilities the daemon uses, in check order.
func CapabilityNames() []string {
	caps := neededCapabilities()
	out := make([]string, len(caps))
	for i, c := range caps {
		out[i] = c.name
	}
	return out
}

// Preflight checks capabilities and kernel features before anything is
// loaded and returns one Check per piece. freeze says whether processes
// will be frozen (some pieces matter only then).
func Preflight(freeze bool) []Check {
	eff, err := effectiveCaps()
	var checks []Check
	if err != nil {
		return []Check{{Name: "capabilities", Fatal: true, Detail: fmt.Sprintf("read own capabilities: %v", err)}}
	}
	has := func(bit int) bool { return eff&(1<<uint(bit)) != 0 }
	// Before Linux 5.8 (and still accepted after), CAP_SYS_ADMIN stands in
	// for CAP_BPF and CAP_PERFMON.
	sysAdmin := has(unix.CAP_SYS_ADMIN)
	for _, c := range neededCapabilities() {
		ok := has(c.bit) || (sysAdmin && (c.bit == unix.CAP_BPF || c.bit == unix.CAP_PERFMON))
		ch := Check{Name: c.name, OK: ok, Fatal: c.fatal && (!c.freezeOnly || freeze)}
		if !ok {
			ch.Detail = "missing capability " + c.name + ": needed to " + c.why
		}
		checks = append(checks, ch)
	}
	checks = append(checks, pidNamespaceCheck())
	canBPF := has(unix.CAP_BPF) || sysAdmin
	sys := syscallChecks(canBPF)
	checks = append(checks, sys...)
	// Feature probes call bpf(): without it they would only repeat the
	// refusal, as a missing feature.
	canProbe := canBPF && sys[0].OK
	var missing []string
	for _, c := range checks {
		if !c.OK && strings.HasPrefix(c.Name, "CAP_") {
			missing = append(missing, c.Name)
		}
	}
	checks = append(checks, kernelChecks(freeze, canProbe, missing)...)
	return checks
}

// pidNamespaceCheck refuses a /proc of another PID namespace than the
// daemon's: the BPF side gives PIDs of the daemon's namespace, which such a
// /proc numbers differently.
func pidNamespaceCheck() Check {
	c := Check{Name: "PID namespace", OK: true, Fatal: true}
	if err := procmem.CheckProcMount(); err != nil {
		c.OK, c.Detail = false, err.Error()
	}
	return c
}

// PreflightError joins the failed fatal checks, or returns nil.
func PreflightError(checks []Check) error {
	var errs []error
	for _, c := range checks {
		if !c.OK && c.Fatal {
			errs = append(errs, errors.New(c.Detail))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("start-up checks failed: %w", errors.Join(errs...))
}

func kernelChecks(freeze, canProbe bool, missingCaps []string) []Check {
	var out []Check
	btf := Check{Name: "kernel BTF", OK: true, Fatal: true}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		btf.OK = false
		btf.Detail = "kernel BTF missing (/sys/kernel/btf/vmlinux): the BPF programs read task_struct with CO-RE; " +
			"use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
	}
	out = append(out, btf)

	up := Check{Name: "uprobes", OK: true, Fatal: true}
	if _, err := os.Stat("/sys/bus/event_source/devices/uprobe/type"); err != nil {
		up.OK = false
		up.Detail = "kernel uprobes missing (/sys/bus/event_source/devices/uprobe): crash probes need CONFIG_UPROBE_EVENTS=y"
	}
	out = append(out, up)

	ld := Check{Name: "lockdown", OK: true, Fatal: true}
	if b, err := os.ReadFile("/sys/kernel/security/lockdown"); err == nil {
		// The active mode is in brackets: "none [integrity] confidentiality".
		if strings.Contains(string(b), "[confidentiality]") {
			ld.OK = false
			ld.Detail = "kernel lockdown=confidentiality forbids BPF reads of kernel memory (bpf_probe_read_kernel) " +
				"and perf events; boot with lockdown=integrity or none"
		}
	}
	out = append(out, ld)

	if !canProbe {
		return out // feature probes load tiny BPF programs: they need CAP_BPF and bpf()
	}
	// cilium/ebpf's feature probes, for what the BPF objects use.
	for _, f := range bpf.Features() {
		if f.FreezeOnly && !freeze {
			continue
		}
		err := f.Probe()
		c := Check{Name: f.Name, OK: err == nil, Fatal: !f.Optional}
		if err != nil {
			c.Detail = featureDetail(f.Lacking, err, missingCaps)
		}
		out = append(out, c)
	}
	ua := Check{Name: "uprobe attach", OK: true, Fatal: true}
	if err := tryUprobe(); err != nil {
		ua.OK = false
		ua.Detail = featureDetail("uprobe attachment", err, missingCaps) + "; no crash probe can be placed"
	}
	out = append(out, ua)
	return out
}

// tryUprobe attaches (and detaches) a do-nothing uprobe the way the probes
// package does — a uprobe_multi link at an explicit file offset when the
// kernel has them (bpf.HaveUprobeMulti), else a perf-event uprobe — on this
// binary's ELF entry point, which runs once at exec and never again: the
// only way to know whether the capabilities suffice on this kernel.
func tryUprobe() error {
	off, err := entryFileOffset("/proc/self/exe")
	if err != nil {
		return err
	}
	ex, err := link.OpenExecutable("/proc/self/exe")
	if err != nil {
		return err
	}
	ret := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	multiErr := bpf.HaveUprobeMulti()
	if multiErr == nil {
		multiErr = tryUprobeMulti(ex, off, ret)
		if multiErr == nil {
			return nil
		}
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", Instructions: ret})
	if err != nil {
		return fmt.Errorf("load test program: %w", err)
	}
	defer prog.Close()
	l, err := ex.Uprobe("", prog, &link.UprobeOptions{Address: off, PID: -1})
	if err != nil {
		// Perf-event uprobes also need CAP_SYS_ADMIN on Linux 6.x.
		return fmt.Errorf("uprobe_multi: %v; perf-event uprobe (needs CAP_SYS_ADMIN): %w", multiErr, err)
	}
	return l.Close()
}

func tryUprobeMulti(ex *link.Executable, off uint64, ret asm.Instructions) error {
	multi, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Kprobe, AttachType: ebpf.AttachTraceUprobeMulti, License: "GPL", Instructions: ret,
	})
	if err != nil {
		return fmt.Errorf("load uprobe_multi test program: %w", err)
	}
	defer multi.Close()
	l, err := ex.UprobeMulti(nil, multi, &link.UprobeMultiOptions{Addresses: []uint64{off}})
	if err != nil {
		return err
	}
	return l.Close()
}

// entryFileOffset converts the ELF entry address to a file offset.
func entryFileOffset(path string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read own ELF: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && f.Entry >= p.Vaddr && f.Entry < p.Vaddr+p.Filesz {
			return f.Entry - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("entry %#x of own ELF is in no executable segment", f.Entry)
}

// effectiveCaps returns the effective capability set of this process.
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}
