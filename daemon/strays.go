package daemon

import (
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/probes"
)

// maxStrayCandidates bounds the stopped processes inspected at start-up.
const maxStrayCandidates = 256

// firstInstruction is how far past a crash function's entry a thread
// stopped by a crash probe can be: the probe stops it before the
// function's second instruction (the first is emulated or single-stepped;
// an x86 instruction is at most 15 bytes).
const firstInstruction = 16

// resumeStrays resumes, before any probe is attached, processes in scope
// that a crash probe stopped but that no frozen record names: a daemon
// that died between the probe's SIGSTOP and writing its record leaves
// exactly that. Such a process has every thread stopped and one of them at
// the first instruction of a crash function. It returns how many it
// resumed.
func (d *Daemon) resumeStrays(scope probes.Scope) int { return resumeStrays(scope, d.probes, d.log) }

// ResumeStrays is the same sweep for the unit's ExecStopPost (`mapsentry
// resume-frozen`): once the daemon is gone, however it went, its BPF
// programs are gone too, so what the sweep finds stopped at a crash probe
// stays stopped for no one unless resumed now — a daemon stopped or killed
// between a probe's SIGSTOP and its record, or with events still unread.
func ResumeStrays(cfg config.Config, log *slog.Logger) int {
	// A manager without a kernel: only its InspectPID is used.
	m := probes.NewManager(nil, probes.Config{}, log)
	return resumeStrays(probes.Scope{Include: scopeInclude(cfg), Exclude: cfg.Discovery.Exclude}, m, log)
}

// binaryInspector reads a running process's binary (probes.Manager).
type binaryInspector interface {
	InspectPID(pid int) (*probes.Binary, error)
}

func resumeStrays(scope probes.Scope, bins binaryInspector, log *slog.Logger) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	resumed, looked := 0, 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		st, err := procmem.ReadStat("/proc/" + e.Name() + "/stat")
		if err != nil || st.State != 'T' {
			continue
		}
		if looked++; looked > maxStrayCandidates {
			log.Warn("more stopped processes than the start-up sweep looks at", "limit", maxStrayCandidates)
			break
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err != nil || !scope.Allows(exe) {
			continue
		}
		if !strayCrash(pid, bins) {
			continue
		}
		id := procmem.Identity{PID: pid, StartTime: st.StartTime}
		switch err := id.Resume(); {
		case errors.Is(err, procmem.ErrGone):
			log.Info("process left stopped at a crash probe is gone: nothing to resume", "pid", pid, "exe", exe)
		case err != nil:
			log.Error("resume process left stopped at a crash probe", "pid", pid, "exe", exe, "err", err)
		default:
			resumed++
			log.Warn("resumed a process left stopped at a crash probe with no frozen record (a daemon died before it took the process over)",
				"pid", pid, "exe", strings.TrimSuffix(exe, " (deleted)"))
		}
	}
	return resumed
}

// strayCrash reports whether every thread of pid is stopped and one sits
// at the first instruction of one of its binary's crash functions.
func strayCrash(pid int, m binaryInspector) bool {
	if ok, err := procmem.AllStopped(pid); err != nil || !ok {
		return false
	}
	bin, err := m.InspectPID(pid)
	if err != nil {
		return false
	}
	defer bin.Close()
	var bias uint64
	if bin.PIE {
		if bias, err = procmem.LoadBias(pid, bin.Entry); err != nil {
			return false
		}
	}
	regs, err := threadregs.FromProc(pid)
	if err != nil {
		return false
	}
	for _, r := range regs {
		for _, fn := range bin.Funcs {
			if entry := fn.Addr + bias; r.PC >= entry && r.PC < entry+firstInstruction {
				return true
			}
		}
	}
	return false
}
