package threadregs

import (
	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/symbolizer"
)

// On arm64 the frame pointer is x29.
func unwindRegs(r *unix.PtraceRegs) symbolizer.Registers {
	return symbolizer.Registers{PC: r.Pc, SP: r.Sp, BP: r.Regs[29]}
}
