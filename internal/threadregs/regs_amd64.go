package threadregs

import (
	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/symbolizer"
)

func unwindRegs(r *unix.PtraceRegs) symbolizer.Registers {
	return symbolizer.Registers{PC: r.Rip, SP: r.Rsp, BP: r.Rbp}
}
