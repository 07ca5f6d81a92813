#include "textflag.h"

// Three one-instruction probe sites, one per way the kernel handles a
// uprobe on x86: a 5-byte NOP (Linux 6.18 rewrites it into a call to its
// uprobe trampoline after the first hit), PUSHQ BP (emulated after the INT3
// trap) and the Go stack check CMPQ SP, 16(R14) (single-stepped).

// func nop5()
TEXT ·nop5(SB), NOSPLIT, $0-0
	BYTE $0x0f; BYTE $0x1f; BYTE $0x44; BYTE $0x00; BYTE $0x00
	RET

// func push()
TEXT ·push(SB), NOSPLIT, $0-0
	PUSHQ BP
	POPQ BP
	RET

// func cmp()
TEXT ·cmp(SB), NOSPLIT, $0-0
	CMPQ SP, 16(R14)
	RET
