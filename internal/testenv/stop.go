package testenv

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// StopProgram is a bare uprobe program that stops the thread hitting it
// with SIGSTOP (the whole process then group-stops): a test's way to catch
// a process at an exact instruction. Closed at the end of t.
func StopProgram(t testing.TB) *ebpf.Program {
	t.Helper()
	RequirePrivileged(t)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Kprobe, License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 19), // SIGSTOP
			asm.FnSendSignalThread.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load the SIGSTOP uprobe program: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
