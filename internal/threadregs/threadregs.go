// Package threadregs owns reading the user registers of every thread of a
// stopped process, for unwinding the goroutines those threads run and for
// the notes of a core file. It writes nothing into the target: either it
// reads /proc/PID/task/TID/syscall (PC and SP only, no ptrace), or it
// seizes each thread briefly with PTRACE_SEIZE + PTRACE_INTERRUPT, reads
// the registers and detaches, leaving the thread in the group stop it was
// in.
package threadregs

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// maxThreads bounds the threads handled for one process.
const maxThreads = 1 << 14

// Threads lists the thread ids of pid.
func Threads(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, fmt.Errorf("list threads of %d: %w", pid, err)
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil && len(out) < maxThreads {
			out = append(out, tid)
		}
	}
	return out, nil
}

// FromProc reads PC and SP of every thread of a stopped process from
// /proc/PID/task/TID/syscall ("nr args... sp pc", or "-1 sp pc" when the
// thread is not in a system call). BP is not available this way; the
// symbolizer unwinds from SP with the pclntab. Threads whose file says
// "running" are skipped: their registers are not stable.
func FromProc(pid int) (map[int]symbolizer.Registers, error) {
	tids, err := Threads(pid)
	if err != nil {
		return nil, err
	}
	out := make(map[int]symbolizer.Registers, len(tids))
	var errs []error
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
		if err != nil {
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
			continue
		}
		r, ok := parseSyscall(string(b))
		if ok {
			out[tid] = r
		}
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func parseSyscall(s string) (symbolizer.Registers, bool) {
	f := strings.Fields(s)
	if len(f) < 3 || f[0] == "running" {
		return symbolizer.Registers{}, false
	}
	sp, err1 := strconv.ParseUint(strings.TrimPrefix(f[len(f)-2], "0x"), 16, 64)
	pc, err2 := strconv.ParseUint(strings.TrimPrefix(f[len(f)-1], "0x"), 16, 64)
	if err1 != nil || err2 != nil {
		return symbolizer.Registers{}, false
	}
	return symbolizer.Registers{PC: pc, SP: sp}, true
}

// Ptrace returns the full user registers of every thread of pid, which
// must already be stopped (group stop). Each thread is seized, interrupted,
// read and detached in turn; detaching puts it back in the group stop, so
// the caller's resume (SIGCONT) is what lets it run again.
func Ptrace(pid int) (map[int]unix.PtraceRegs, error) {
	tids, err := Threads(pid)
	if err != nil {
		return nil, err
	}
	// ptrace requests must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	out := make(map[int]unix.PtraceRegs, len(tids))
	var errs []error
	for _, tid := range tids {
		r, err := ptraceOne(tid)
		if err != nil {
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
			continue
		}
		out[tid] = r
	}
	// A detached thread goes back to the group stop through the kernel's
	// signal path: for a moment it shows as R (without running user code,
	// since the stop is still pending). Hand the process back only once
	// every thread is T again, as the caller's freeze expects.
	if _, ok, err := procmem.WaitStopped(pid, 200*time.Millisecond); err != nil || !ok {
		errs = append(errs, fmt.Errorf("threads of %d not back in group stop after detach (%v)", pid, err))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("registers of pid %d: %w", pid, errors.Join(errs...))
	}
	return out, errors.Join(errs...)
}

func ptraceOne(tid int) (regs unix.PtraceRegs, err error) {
	if err := unix.PtraceSeize(tid); err != nil {
		return regs, fmt.Errorf("seize: %w", err)
	}
	defer func() {
		if derr := unix.PtraceDetach(tid); derr != nil && err == nil {
			err = fmt.Errorf("detach: %w", derr)
		}
	}()
	if err := unix.PtraceInterrupt(tid); err != nil {
		return regs, fmt.Errorf("interrupt: %w", err)
	}
	var ws unix.WaitStatus
	for i := 0; i < 8; i++ {
		wpid, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return regs, fmt.Errorf("wait: %w", err)
		}
		if wpid == tid && ws.Stopped() {
			break
		}
		if ws.Exited() || ws.Signaled() {
			return regs, fmt.Errorf("thread exited")
		}
	}
	if err := unix.PtraceGetRegs(tid, &regs); err != nil {
		return regs, fmt.Errorf("get registers: %w", err)
	}
	return regs, nil
}

// ForUnwind converts ptrace registers to what the symbolizer needs.
func ForUnwind(m map[int]unix.PtraceRegs) map[int]symbolizer.Registers {
	out := make(map[int]symbolizer.Registers, len(m))
	for tid, r := range m {
		out[tid] = unwindRegs(&r)
	}
	return out
}
