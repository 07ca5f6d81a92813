package symbolizer

import (
	"encoding/binary"
	"fmt"
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

// mappedMem is sliceMem that can tell where its mapping ends, like
// procmem.Copy; ReadAt past the end counts as a miss.
type mappedMem struct {
	sliceMem
	misses int
}

func (m *mappedMem) ReadAt(p []byte, addr uint64) (int, error) {
	n, err := m.sliceMem.ReadAt(p, addr)
	if err != nil {
		m.misses++
	}
	return n, err
}

func (m *mappedMem) ReadMapped(p []byte, addr uint64) (int, error) {
	end := m.base + uint64(len(m.b))
	if addr < m.base || addr >= end {
		return 0, fmt.Errorf("read %#x: unmapped", addr)
	}
	return m.ReadAt(p[:min(uint64(len(p)), end-addr)], addr)
}

// TestSignalContextStopsAtMappingEnd: a thread on the main thread's stack
// (its top less than the scan above SP, the end of the mapping not page
// aligned to the scan) is scanned up to the top of the mapping and no
// further: reading the page beyond through procmem.Copy made a cut, and
// the storm's reports "incomplete".
func TestSignalContextStopsAtMappingEnd(t *testing.T) {
	const (
		base, size    = 0x7fff00000000, 0x3000
		gLo, gHi      = 0xc000000000, 0xc000008000
		rip, rsp, rbp = 0x401234, 0xc000007f00, 0xc000007f40
	)
	b := make([]byte, size)
	uc := size - ucMinBytes - 64
	put := func(off int, v uint64) { binary.LittleEndian.PutUint64(b[uc+off:], v) }
	put(ucStackSP, base)
	put(ucStackSize, size)
	put(ucMcontext+mcRBP, rbp)
	put(ucMcontext+mcRSP, rsp)
	put(ucMcontext+mcRIP, rip)
	mem := &mappedMem{sliceMem: sliceMem{base: base, b: b}}
	pc, sp, bp, ok := SignalContext(mem, base+0x100, gLo, gHi, func(pc uint64) bool { return pc == rip })
	if !ok || pc != rip || sp != rsp || bp != rbp {
		t.Fatalf("got %#x %#x %#x %v; want the frame below the top of the mapping", pc, sp, bp, ok)
	}
	if mem.misses != 0 {
		t.Errorf("%d reads beyond the mapping", mem.misses)
	}
}
