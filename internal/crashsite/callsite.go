package crashsite

import (
	"encoding/binary"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/mapsentry/mapsentry/symbolizer"
)

// codeWindow is how far before a call instruction we look for the
// instruction that loaded the map type into the first argument register.
const codeWindow = 64

// typeFromCode recovers the map type descriptor a caller passed to a map
// function, from the caller's code: Go materialises it with
// `LEAQ type:map[K]V(SB), AX` (RIP-relative) shortly before the CALL that
// ret returns from. The bytes before ret are decoded from every start in a
// window; a start counts only when its instructions land exactly on the
// CALL (x86 cannot be decoded backwards), and a target counts only when it
// validates as a map type. Returns 0 when none does.
func (v validator) typeFromCode(ret uint64) uint64 {
	if ret < codeWindow {
		return 0
	}
	code := make([]byte, codeWindow)
	start := ret - codeWindow
	if _, err := v.mem.ReadAt(code, start); err != nil {
		return 0
	}
	for off := 0; off < len(code)-5; off++ {
		var leas []uint64
		pc := off
		for pc < len(code) {
			inst, err := x86asm.Decode(code[pc:], 64)
			if err != nil || inst.Len == 0 {
				break
			}
			next := pc + inst.Len
			if inst.Op == x86asm.LEA {
				if m, ok := inst.Args[1].(x86asm.Mem); ok && m.Base == x86asm.RIP {
					leas = append(leas, uint64(int64(start)+int64(next)+m.Disp))
				}
			}
			if next == len(code) {
				// Aligned on the call: the last instruction must be it.
				if inst.Op == x86asm.CALL {
					for i := len(leas) - 1; i >= 0; i-- {
						if v.typeOK(leas[i]) {
							return leas[i]
						}
					}
				}
				break
			}
			pc = next
		}
	}
	return 0
}

// indirectWords is how many words of each object a frame points to are
// looked at: a closure context holds its captured variables right after
// the function pointer, a struct its first fields.
const indirectWords = 4

// mapInFrames looks for the one word in [lo, hi) that validates as a map
// of type typ; failing that, the one such word among the first words of
// the objects the frame points to (a goroutine started with `go f(m)` or a
// closure reads m from its context). Several distinct candidates (two maps
// of the same type) are ambiguous: none is returned. indirect says the map
// was found through a pointer.
func (v validator) mapInFrames(lo, hi, typ uint64, regs []uint64) (m uint64, indirect bool) {
	if hi <= lo || hi-lo > maxScanBytes {
		hi = lo + maxScanBytes
	}
	buf := make([]byte, hi-lo)
	if _, err := v.mem.ReadAt(buf, lo); err != nil {
		buf = nil
	}
	found := map[uint64]bool{}
	check := func(x uint64) {
		if x >= 4096 && x != typ && !found[x] && v.mapOK(x, typ) {
			found[x] = true
		}
	}
	var words []uint64
	for off := 0; off+8 <= len(buf); off += 8 {
		words = append(words, binary.LittleEndian.Uint64(buf[off:]))
	}
	words = append(words, regs...)
	for _, w := range words {
		check(w)
	}
	// One candidate, or one non-empty among several (an empty map of the
	// same type in the frame is not the one being written).
	one := func() uint64 {
		var only, nonEmpty uint64
		n := 0
		for m := range found {
			only = m
			if v.nonEmpty(m) {
				nonEmpty = m
				n++
			}
		}
		switch {
		case len(found) == 1:
			return only
		case n == 1:
			return nonEmpty
		}
		return 0
	}
	if len(found) > 0 {
		return one(), false
	}
	var obj [8 * indirectWords]byte
	seen := map[uint64]bool{}
	for _, w := range words {
		if w < 4096 || w%8 != 0 || seen[w] {
			continue
		}
		seen[w] = true
		if _, err := v.mem.ReadAt(obj[:], w); err != nil {
			continue
		}
		for i := 0; i < indirectWords; i++ {
			check(binary.LittleEndian.Uint64(obj[8*i:]))
		}
	}
	return one(), true
}

// maxWrapperBytes bounds the code of a go-statement wrapper looked at.
const maxWrapperBytes = 4096

// isGoWrapper reports a compiler-made wrapper for a go statement
// (`go writerB(m)` runs main.main.gowrap3, Go 1.21+).
func isGoWrapper(name string) bool {
	i := strings.LastIndex(name, ".gowrap")
	if i < 0 || i+len(".gowrap") == len(name) {
		return false
	}
	for _, r := range name[i+len(".gowrap"):] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// unwrapGo renames a call site in a go-statement wrapper after the
// function the go statement started, which is what the user wrote: the
// callee inlined into the wrapper, else the wrapper's direct call. File
// and line become that function's. Left as it is when neither is found.
func unwrapGo(mem Memory, tab Symbols, c *symbolizer.Frame) {
	if c == nil || !isGoWrapper(c.Function) || c.PC == 0 {
		return
	}
	fn, ok := tab.FuncForPC(c.PC - 1)
	if !ok || fn.End <= fn.Entry {
		return
	}
	n := fn.End - fn.Entry
	if n > maxWrapperBytes {
		n = maxWrapperBytes
	}
	code := make([]byte, n)
	if _, err := mem.ReadAt(code, fn.Entry); err != nil {
		return
	}
	for off := 0; off < len(code); {
		pc := fn.Entry + uint64(off)
		if frs := tab.PCToFrames(pc); len(frs) > 1 {
			if w := frs[len(frs)-2]; !isRuntime(w.Function) && !isGoWrapper(w.Function) {
				c.Function, c.File, c.Line = w.Function, w.File, w.Line
				return
			}
		}
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || inst.Len == 0 {
			return
		}
		if rel, ok := inst.Args[0].(x86asm.Rel); ok && inst.Op == x86asm.CALL {
			target := uint64(int64(pc) + int64(inst.Len) + int64(rel))
			if f, ok := tab.FuncForPC(target); ok && !isRuntime(f.Name) && !isGoWrapper(f.Name) {
				c.Function = f.Name
				if frs := tab.PCToFrames(f.Entry); len(frs) > 0 {
					c.File, c.Line = frs[0].File, frs[0].Line
				}
				return
			}
		}
		off += inst.Len
	}
}
