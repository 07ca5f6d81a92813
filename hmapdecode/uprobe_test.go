package hmapdecode

import (
	"sync"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// stopAtUprobe attaches, for process pid only, a uprobe at file offset off
// of bin whose program stops the hitting thread with SIGSTOP
// (bpf_send_signal_thread: the thread stops before running the probed
// instruction; the whole process follows as a group stop). The program is
// four instructions, assembled here so the test needs no clang. The
// returned detach is idempotent and also runs in cleanup.
func stopAtUprobe(t testing.TB, bin string, off uint64, pid int) (detach func()) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "stop_thread",
		Type:    ebpf.Kprobe,
		License: "Dual MIT/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, int32(syscall.SIGSTOP)),
			asm.FnSendSignalThread.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		testenv.Unavailable(t, "load BPF program: "+err.Error())
	}
	ex, err := link.OpenExecutable(bin)
	if err != nil {
		prog.Close()
		t.Fatal(err)
	}
	// Address is a file offset; never 0 on Go binaries (DESIGN.md).
	l, err := ex.Uprobe("stop_thread", prog, &link.UprobeOptions{Address: off, PID: pid})
	if err != nil {
		prog.Close()
		testenv.Unavailable(t, "attach uprobe: "+err.Error())
	}
	var once sync.Once
	detach = func() {
		once.Do(func() {
			l.Close()
			prog.Close()
		})
	}
	t.Cleanup(detach)
	return detach
}
