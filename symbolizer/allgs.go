package symbolizer

import (
	"debug/elf"
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// ErrNoAllgs means the address of runtime.allgs could not be established.
var ErrNoAllgs = errors.New("runtime.allgs not found")

// maxDecodeBytes bounds the instructions decoded while looking for allgs.
const maxDecodeBytes = 1024

// FindAllgs returns the address of the runtime.allgs slice header
// ([]*g: pointer, length, capacity). It uses .symtab when present; in a
// stripped binary it decodes runtime.forEachG (AllgsFromForEachG).
func FindAllgs(f *elf.File, t *Table) (uint64, error) {
	if syms, err := lookupSymbols(f, "runtime.allgs"); err == nil {
		if s, ok := syms["runtime.allgs"]; ok {
			return s.Value, nil
		}
	}
	fn, ok := t.LookupFunc("runtime.forEachG")
	if !ok {
		return 0, fmt.Errorf("runtime.forEachG not in pclntab: %w", ErrNoAllgs)
	}
	return AllgsFromForEachG(f, fn)
}

// AllgsFromForEachG finds runtime.allgs in the code of runtime.forEachG
// (fn, from the pclntab), whose loop `for _, gp := range allgs` loads the
// slice's pointer and length with two RIP-relative MOVQs from A and A+8
// (the same code in Go 1.19 through 1.27, amd64). It needs no symbol
// table, so discovery uses it for every binary, found in the same pass
// over the function table as the crash functions.
func AllgsFromForEachG(f *elf.File, fn Func) (uint64, error) {
	if f.Machine != elf.EM_X86_64 {
		return 0, fmt.Errorf("decoding runtime.forEachG on %v: %w", f.Machine, ErrNoAllgs)
	}
	size := fn.End - fn.Entry
	if size > maxDecodeBytes {
		size = maxDecodeBytes
	}
	code := make([]byte, size)
	if _, err := NewELFMem(f).ReadAt(code, fn.Entry); err != nil {
		return 0, fmt.Errorf("read runtime.forEachG: %w", err)
	}
	addr, err := allgsFromCode(code, fn.Entry, func(a uint64) bool { return dataAddr(f, a) })
	if err != nil {
		return 0, fmt.Errorf("decode runtime.forEachG at %#x: %w", fn.Entry, err)
	}
	return addr, nil
}

// allgsFromCode finds the first pair of RIP-relative 8-byte loads from A
// and A+8 with A in writable data.
func allgsFromCode(code []byte, pc uint64, isData func(uint64) bool) (uint64, error) {
	var loads []uint64
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || inst.Len == 0 {
			off++ // resynchronise on padding or an unknown opcode
			continue
		}
		next := pc + uint64(off+inst.Len)
		off += inst.Len
		if inst.Op != x86asm.MOV || inst.DataSize != 64 {
			continue
		}
		m, ok := inst.Args[1].(x86asm.Mem)
		if !ok || m.Base != x86asm.RIP || m.Index != 0 {
			continue
		}
		target := uint64(int64(next) + m.Disp)
		if !isData(target) {
			continue
		}
		for _, prev := range loads {
			if prev+8 == target {
				return prev, nil
			}
		}
		loads = append(loads, target)
	}
	return 0, ErrNoAllgs
}

// dataAddr reports whether a lies in a writable loadable segment.
func dataAddr(f *elf.File, a uint64) bool {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_W != 0 && a >= p.Vaddr && a-p.Vaddr < p.Memsz {
			return true
		}
	}
	return false
}
