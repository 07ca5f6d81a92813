package symbolizer

import (
	"encoding/binary"
	"testing"
)

// The signal-frame search on a synthetic signal stack: it finds the frame
// the kernel would have pushed, and refuses one whose altstack does not
// contain the thread's SP, whose saved rsp is off the goroutine's stack or
// whose rip is unknown; reads stop at the end of the mapping.
func TestSignalContextSynthetic(t *testing.T) {
	const (
		ssBase, ssSize = 0x10000, 0x8000
		gLo, gHi       = 0xc000000000, 0xc000008000
		rip, rsp, rbp  = 0x401234, 0xc000007f00, 0xc000007f40
	)
	frame := func(ss, size, savedSP uint64) sliceMem {
		b := make([]byte, ssSize)
		uc := 0x7000 // ucontext near the top, as the kernel places it
		put := func(off int, v uint64) { binary.LittleEndian.PutUint64(b[uc+off:], v) }
		put(0, 7) // uc_flags
		put(ucStackSP, ss)
		put(ucStackSize, size)
		put(ucMcontext+mcRBP, rbp)
		put(ucMcontext+mcRSP, savedSP)
		put(ucMcontext+mcRIP, rip)
		return sliceMem{base: ssBase, b: b}
	}
	known := func(pc uint64) bool { return pc == rip }
	sp := uint64(ssBase + 0x6000)

	pc, gotSP, bp, ok := SignalContext(frame(ssBase, ssSize, rsp), sp, gLo, gHi, known)
	if !ok || pc != rip || gotSP != rsp || bp != rbp {
		t.Fatalf("got %#x %#x %#x %v", pc, gotSP, bp, ok)
	}
	for name, c := range map[string]struct {
		mem   sliceMem
		known func(uint64) bool
	}{
		"altstack not around sp": {frame(ssBase+0x7000, 0x800, rsp), known},
		"absurd altstack size":   {frame(ssBase, 1<<40, rsp), known},
		"rsp off the goroutine":  {frame(ssBase, ssSize, gHi+8), known},
		"unknown rip":            {frame(ssBase, ssSize, rsp), func(uint64) bool { return false }},
	} {
		if _, _, _, ok := SignalContext(c.mem, sp, gLo, gHi, c.known); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	// Nothing mapped at sp: no read past the failure, no frame.
	if _, _, _, ok := SignalContext(sliceMem{base: 0x90000, b: make([]byte, 64)}, sp, gLo, gHi, known); ok {
		t.Error("frame found in unmapped memory")
	}
}
