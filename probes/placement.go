package probes

import (
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// Placement is where a map-op uprobe goes inside a function, relative to
// its entry, and why there.
type Placement struct {
	Offset uint64 `json:"offset"`
	// At is the instruction the probe sits on ("PUSHQ BP", "JBE").
	At string `json:"at"`
}

// ErrNoPlacement marks a function whose prologue could not be confirmed:
// it gets no map-op probe.
var ErrNoPlacement = errors.New("no confirmed probe placement")

// placeAfterPrologue decodes a Go amd64 function from its entry and returns
// the first instruction after the stack-check prologue that the kernel
// emulates rather than single-steps (capture-facts §5: ~0.7 us per hit
// instead of ~10 us at the CMP at offset 0).
//
// Go's prologue is
//
//	CMPQ SP, 0x10(R14)            (or LEAQ -x(SP), R12; CMPQ R12, 0x10(R14) for big frames)
//	JBE  morestack
//	PUSHQ BP                      (Go 1.21+; 1.19/1.20 build the frame with SUBQ/ADDQ $x, SP)
//
// The probe goes on the PUSHQ BP when it follows the JBE: it fires once per
// call even when the stack grows, with every argument register intact and
// the return address at [SP]. When the frame is built with SUB (Go 1.19),
// SUB would be single-stepped; the probe goes on the JBE instead, a
// conditional branch the kernel also emulates. There it fires a second
// time for a call that grows the stack (morestack restarts the function
// with the same arguments): a duplicate record, never a wrong one.
//
// Anything else is refused with the reason: a probe in the middle of an
// instruction is accepted by the kernel and silently corrupts the program.
func placeAfterPrologue(code []byte) (Placement, error) {
	pos := 0
	next := func() (x86asm.Inst, error) {
		if pos >= len(code) {
			return x86asm.Inst{}, fmt.Errorf("%w: prologue runs past %d bytes read", ErrNoPlacement, len(code))
		}
		inst, err := x86asm.Decode(code[pos:], 64)
		if err != nil {
			return inst, fmt.Errorf("%w: decode at +%d: %v", ErrNoPlacement, pos, err)
		}
		return inst, nil
	}
	inst, err := next()
	if err != nil {
		return Placement{}, err
	}
	limit := x86asm.RSP
	if inst.Op == x86asm.LEA && inst.Args[0] == x86asm.R12 {
		if m, ok := inst.Args[1].(x86asm.Mem); !ok || m.Base != x86asm.RSP {
			return Placement{}, fmt.Errorf("%w: +0 is %v, not LEAQ -x(SP), R12", ErrNoPlacement, inst)
		}
		limit = x86asm.R12
		pos += inst.Len
		if inst, err = next(); err != nil {
			return Placement{}, err
		}
	}
	if !isStackCheck(inst, limit) {
		if inst.Op == x86asm.PUSH && inst.Args[0] == x86asm.RBP && pos == 0 {
			return Placement{}, fmt.Errorf("%w: no stack check (nosplit): the only emulated instruction is at offset 0", ErrNoPlacement)
		}
		return Placement{}, fmt.Errorf("%w: +%d is %v, not the stack check CMPQ %v, 0x10(R14)", ErrNoPlacement, pos, inst, limit)
	}
	pos += inst.Len
	if inst, err = next(); err != nil {
		return Placement{}, err
	}
	if inst.Op != x86asm.JBE {
		return Placement{}, fmt.Errorf("%w: +%d is %v, not the JBE to morestack", ErrNoPlacement, pos, inst)
	}
	jbe := pos
	pos += inst.Len
	if inst, err = next(); err != nil {
		return Placement{}, err
	}
	if inst.Op == x86asm.PUSH && inst.Args[0] == x86asm.RBP {
		return Placement{Offset: uint64(pos), At: "PUSHQ BP"}, nil
	}
	if inst.Op == x86asm.SUB || inst.Op == x86asm.ADD {
		if r, ok := inst.Args[0].(x86asm.Reg); ok && r == x86asm.RSP {
			return Placement{Offset: uint64(jbe), At: "JBE"}, nil
		}
	}
	return Placement{}, fmt.Errorf("%w: +%d after the stack check is %v, neither PUSHQ BP nor a frame SUB", ErrNoPlacement, pos, inst)
}

// isStackCheck reports CMPQ reg, 0x10(R14): the stack bound check
// against g.stackguard0 (R14 holds g in ABIInternal).
func isStackCheck(inst x86asm.Inst, reg x86asm.Reg) bool {
	if inst.Op != x86asm.CMP || inst.Args[0] != reg {
		return false
	}
	m, ok := inst.Args[1].(x86asm.Mem)
	return ok && m.Base == x86asm.R14 && m.Disp == 0x10 && m.Index == 0
}

// directCalls returns the targets (virtual addresses) of the CALL rel32
// instructions in code, a function starting at entry. Decoding is linear:
// Go puts no data in text; an undecodable byte is skipped.
func directCalls(code []byte, entry uint64) []uint64 {
	var out []uint64
	for pos := 0; pos < len(code); {
		inst, err := x86asm.Decode(code[pos:], 64)
		if err != nil || inst.Len == 0 {
			pos++
			continue
		}
		if inst.Op == x86asm.CALL {
			if rel, ok := inst.Args[0].(x86asm.Rel); ok {
				out = append(out, uint64(int64(entry)+int64(pos+inst.Len)+int64(rel)))
			}
		}
		pos += inst.Len
	}
	return out
}
