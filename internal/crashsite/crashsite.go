// Package crashsite owns locating, at a fatal probe hit, what the fatal
// error is about: the map (header and type descriptor) and the user call
// site that was using it. It reads a frozen process's memory through a
// small interface, walks the frame-pointer chain from the probed thread's
// registers and checks every candidate structurally before trusting it;
// when nothing validates it says so and why, never a guess as fact.
package crashsite

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// Memory reads the target's memory.
type Memory interface {
	ReadAt(p []byte, addr uint64) (int, error)
}

// Regs are the probed thread's registers at the probe (function entry).
type Regs struct {
	PC, SP, BP uint64
	// RetAddr is the return address at entry: a PC in the caller.
	RetAddr uint64
	// GPR are the general-purpose registers at the probe, any order: the
	// last resort when the map function kept its arguments in registers.
	GPR []uint64
}

// Site is what FindMap found.
type Site struct {
	MapAddr  uint64 `json:"addr"`
	TypeAddr uint64 `json:"type_addr"`
	// MapFunction is the runtime map function whose frame held the map
	// (e.g. runtime.mapassign_fast64, internal/runtime/maps.(*Iter).Next).
	MapFunction string `json:"map_function,omitempty"`
	// FoundBy says how: "spill slots of F", "iterator of F", "frame scan of F".
	FoundBy string `json:"found_by"`
	// CallSite is the first non-runtime frame above the map function.
	CallSite *symbolizer.Frame `json:"call_site,omitempty"`
	// Op is assign, access, delete, iterate, clear or clone, from MapFunction.
	Op string `json:"op,omitempty"`
}

// Limits of the walk: a hostile stack must not keep us reading.
const (
	maxFrames    = 16
	maxScanBytes = 1024
)

// frame is one frame of the frame-pointer chain: fp is the frame's saved-BP
// slot; pc a PC inside the function owning the frame.
type frame struct {
	fp, pc uint64
	fn     string
}

// Walk returns the frames above the probed function, innermost first: the
// probed function's caller first (whose frame pointer is BP at entry).
func walk(mem Memory, tab Symbols, r Regs) []frame {
	var out []frame
	fp, pc := r.BP, r.RetAddr
	var buf [16]byte
	for i := 0; i < maxFrames && fp != 0 && pc != 0; i++ {
		name := ""
		if f, ok := tab.FuncForPC(pc - 1); ok {
			name = f.Name
		}
		out = append(out, frame{fp: fp, pc: pc, fn: name})
		if _, err := mem.ReadAt(buf[:], fp); err != nil {
			break
		}
		next := binary.LittleEndian.Uint64(buf[:8])
		// Frames grow towards higher addresses as we go up; anything else
		// is a broken chain.
		if next <= fp || next-fp > 1<<24 {
			break
		}
		fp, pc = next, binary.LittleEndian.Uint64(buf[8:])
	}
	return out
}

// IsMapFunction reports whether a function is part of the runtime's map
// implementation (classic or Swiss, any supported version).
func IsMapFunction(name string) bool {
	return strings.HasPrefix(name, "runtime.map") || strings.HasPrefix(name, "runtime.mapIter") ||
		strings.HasPrefix(name, "internal/runtime/maps.")
}

// isRuntime reports frames a user does not write: the runtime's, and
// assembly functions without a package (gogo, a goroutine being switched
// to): every Go function's name has its package before a dot.
func isRuntime(name string) bool {
	return strings.HasPrefix(name, "runtime.") || strings.HasPrefix(name, "internal/runtime/") ||
		(name != "" && !strings.Contains(name, "."))
}

// OpOf names the map operation of a map function.
func OpOf(name string) string {
	n := name
	if i := strings.LastIndexByte(n, '.'); i >= 0 {
		n = n[i+1:]
	}
	n = strings.ToLower(n)
	switch {
	case strings.Contains(n, "assign"), strings.HasPrefix(n, "putslot"), strings.Contains(n, "uncheckedputslot"),
		n == "grow", n == "split", n == "rehash", strings.HasPrefix(n, "growto"), n == "hashgrow", n == "growwork",
		strings.HasPrefix(n, "evacuate"), n == "installtablesplit":
		// Growth runs inside a write.
		return "assign"
	case strings.Contains(n, "delete"):
		return "delete"
	case strings.Contains(n, "iter"), n == "next", n == "init", strings.Contains(n, "grownkeyelem"):
		return "iterate"
	case strings.Contains(n, "clear"):
		return "clear"
	case strings.Contains(n, "clone"):
		return "clone"
	case strings.Contains(n, "access"), strings.HasPrefix(n, "getwith"):
		return "access"
	}
	return ""
}

// FindMap locates the map a fatal map error is about. l must be the
// binary's layout; tab its symbol table.
func FindMap(mem Memory, tab Symbols, l *goruntime.Layout, r Regs) (*Site, error) {
	s, err := findMap(mem, tab, l, r)
	if s != nil {
		unwrapGo(mem, tab, s.CallSite)
	}
	return s, err
}

// findMap tries the ways of finding the map in order of trust (spill
// slots, the call site's code, a frame scan, the registers) and explains,
// when none works, what each found.
func findMap(mem Memory, tab Symbols, l *goruntime.Layout, r Regs) (*Site, error) {
	if l.Arch != "amd64" {
		return nil, fmt.Errorf("map location on %s: %w", l.Arch, goruntime.ErrUnsupported)
	}
	frames := walk(mem, tab, r)
	if len(frames) == 0 {
		return nil, fmt.Errorf("no frame-pointer chain from bp %#x", r.BP)
	}
	ms := &mapSearch{v: validator{mem: mem, l: l}, tab: tab, frames: frames, gpr: r.GPR}
	for _, find := range []func() *Site{ms.fromSpills, ms.fromCallerCode, ms.fromFrameScan, ms.fromRegisters} {
		if s := find(); s != nil {
			return s, nil
		}
	}
	return nil, ms.failure()
}

// mapSearch is one findMap: the frames above the probe and what each way
// of finding the map tried, for the error when none validates.
type mapSearch struct {
	v      validator
	tab    Symbols
	frames []frame
	gpr    []uint64
	// tried are the map functions whose spill slots were looked at;
	// codeNotes say why each call site's code gave no map.
	tried     []string
	codeNotes []string
}

// fromSpills takes the map from the spill slots of the innermost map
// function whose slots validate: where Go puts its arguments at a call.
func (ms *mapSearch) fromSpills() *Site {
	for i, f := range ms.frames {
		if !IsMapFunction(f.fn) {
			continue
		}
		ms.tried = append(ms.tried, f.fn)
		if s := ms.v.fromSpills(f); s != nil {
			return attribute(s, ms.tab, ms.frames, i)
		}
	}
	return nil
}

// fromCallerCode covers a map function that did not spill (the Swiss read
// path calls fatal before spilling anything): the type is then still in
// the caller's code (LEAQ type, AX before the CALL), and the map in the
// caller's frame or argument spill area, or in a register.
func (ms *mapSearch) fromCallerCode() *Site {
	for i, f := range ms.frames {
		if !IsMapFunction(f.fn) || i+1 >= len(ms.frames) {
			continue
		}
		caller := ms.frames[i+1]
		if IsMapFunction(caller.fn) {
			continue // the user's call is further up
		}
		typ := ms.v.typeFromCode(caller.pc)
		if typ == 0 {
			ms.codeNotes = append(ms.codeNotes, fmt.Sprintf("no map type loaded before the call at %#x in %s", caller.pc, caller.fn))
			continue
		}
		ms.codeNotes = append(ms.codeNotes, fmt.Sprintf("type %#x from the code of %s, but no single map of it in frames %#x..%#x", typ, caller.fn, f.fp, caller.fp+48))
		if m, indirect := ms.v.mapInFrames(f.fp, caller.fp+48, typ, ms.gpr); m != 0 {
			how := "type from the call site's code, map from the caller's frame"
			if indirect {
				how = "type from the call site's code, map through a pointer in the caller's frame (closure or struct)"
			}
			return attribute(&Site{MapAddr: m, TypeAddr: typ, FoundBy: how}, ms.tab, ms.frames, i)
		}
	}
	return nil
}

// fromFrameScan scans the frames of the map function and its caller for a
// (type, map) pair that validates.
func (ms *mapSearch) fromFrameScan() *Site {
	for i, f := range ms.frames {
		if !IsMapFunction(f.fn) || i+1 >= len(ms.frames) {
			continue
		}
		if s := ms.v.scan(ms.frames[i], ms.frames[i+1]); s != nil {
			return attribute(s, ms.tab, ms.frames, i)
		}
	}
	return nil
}

// fromRegisters is the last resort: the registers at the probe. Accepted
// only when exactly one (type, map) pair validates, so an unrelated map in
// a register cannot be taken for the crashing one.
func (ms *mapSearch) fromRegisters() *Site {
	s := ms.v.fromRegisters(ms.gpr)
	if s == nil {
		return nil
	}
	for i, f := range ms.frames {
		if IsMapFunction(f.fn) {
			return attribute(s, ms.tab, ms.frames, i)
		}
	}
	return s
}

// failure says why no way found the map: no map function above the probe,
// or what each map function's slots and call site gave.
func (ms *mapSearch) failure() error {
	if len(ms.tried) == 0 {
		names := make([]string, 0, len(ms.frames))
		for _, f := range ms.frames {
			names = append(names, f.fn)
		}
		return fmt.Errorf("no map function among the %d frames above the probe (%s)", len(ms.frames), strings.Join(names, " < "))
	}
	return fmt.Errorf("no spill slot or frame word of %s validated as a map and its type (%s)", strings.Join(ms.tried, ", "), strings.Join(ms.codeNotes, "; "))
}

// attribute names on s the map function frames[i] whose frame gave it, its
// operation, and the user call site above it.
func attribute(s *Site, tab Symbols, frames []frame, i int) *Site {
	s.MapFunction, s.Op = frames[i].fn, OpOf(frames[i].fn)
	s.CallSite = callSite(tab, frames[i+1:])
	return s
}

// callSite is the first non-runtime frame, with file and line.
func callSite(tab Symbols, frames []frame) *symbolizer.Frame {
	for _, f := range frames {
		if f.fn == "" || isRuntime(f.fn) {
			continue
		}
		fr := tab.PCToFrames(f.pc - 1)
		if len(fr) > 0 {
			// Innermost first: with inlining, the innermost frame is the
			// line that called into the map — unless a runtime function
			// was inlined there (runtime.Gosched into a loop that
			// yields): then the innermost user frame.
			c := userFrame(fr)
			c.PC = f.pc
			return &c
		}
		return &symbolizer.Frame{Function: f.fn, PC: f.pc}
	}
	return nil
}

type validator struct {
	mem Memory
	l   *goruntime.Layout
}

func (v validator) word(addr uint64) (uint64, bool) {
	var b [8]byte
	if addr == 0 {
		return 0, false
	}
	if _, err := v.mem.ReadAt(b[:], addr); err != nil {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[:]), true
}

// fromSpills tries the argument spill slots of a map function's frame:
// [fp+16], [fp+24], ... hold its register arguments when the function
// spilled them. The interpretation the function's signature implies is
// tried first — iterators hold the map at it+24 and its type at it+16
// (hiter and maps.Iter alike), (*Map) methods take the map as receiver
// before the type, runtime.mapX(t, m, ...) the type first — and only then
// every other ordered pair, since an iterator's own words can pass for an
// empty small map.
func (v validator) fromSpills(f frame) *Site {
	var w [4]uint64
	for i := range w {
		w[i], _ = v.word(f.fp + 16 + uint64(8*i))
	}
	iter := func(it uint64) *Site {
		typ, ok1 := v.word(it + 16)
		m, ok2 := v.word(it + 24)
		if ok1 && ok2 && v.typeOK(typ) && v.mapOK(m, typ) {
			return &Site{MapAddr: m, TypeAddr: typ, FoundBy: "iterator of " + f.fn}
		}
		return nil
	}
	pair := func(ti, mi int) *Site {
		if v.typeOK(w[ti]) && v.mapOK(w[mi], w[ti]) {
			return &Site{MapAddr: w[mi], TypeAddr: w[ti], FoundBy: "spill slots of " + f.fn}
		}
		return nil
	}
	switch {
	case OpOf(f.fn) == "iterate" && !strings.HasPrefix(f.fn, "runtime.mapiterinit") && !strings.HasPrefix(f.fn, "runtime.mapIterStart"):
		if s := iter(w[0]); s != nil {
			return s
		}
	case strings.Contains(f.fn, ".(*Map)."):
		if s := pair(1, 0); s != nil {
			return s
		}
	case strings.Contains(f.fn, ".(*table)."):
		if s := pair(1, 2); s != nil { // (t *table) X(typ, m, ...)
			return s
		}
	default:
		if s := pair(0, 1); s != nil {
			return s
		}
	}
	for i := range w {
		for j := range w {
			if i != j {
				if s := pair(i, j); s != nil {
					return s
				}
			}
		}
	}
	for i := range w {
		if s := iter(w[i]); s != nil {
			return s
		}
	}
	return nil
}

// fromRegisters finds the one (type, map) pair among register values.
func (v validator) fromRegisters(gpr []uint64) *Site {
	var types []uint64
	maps := map[uint64]bool{}
	seen := map[uint64]bool{}
	for _, x := range gpr {
		if x < 4096 || seen[x] {
			continue
		}
		seen[x] = true
		if v.typeOK(x) {
			types = append(types, x)
		}
	}
	var found *Site
	for _, t := range types {
		for x := range seen {
			if x != t && v.mapOK(x, t) {
				maps[x] = true
				found = &Site{MapAddr: x, TypeAddr: t, FoundBy: "registers at the fatal call"}
			}
		}
	}
	if len(maps) != 1 {
		return nil
	}
	return found
}

// scan looks through the words of two frames for a type and a map that
// validate together.
func (v validator) scan(inner, outer frame) *Site {
	lo, hi := inner.fp, outer.fp+16
	if hi <= lo || hi-lo > maxScanBytes {
		hi = lo + maxScanBytes
	}
	buf := make([]byte, hi-lo)
	if _, err := v.mem.ReadAt(buf, lo); err != nil {
		return nil
	}
	var types, words []uint64
	for off := 0; off+8 <= len(buf); off += 8 {
		x := binary.LittleEndian.Uint64(buf[off:])
		if x < 4096 {
			continue
		}
		words = append(words, x)
		if v.typeOK(x) {
			types = append(types, x)
		}
	}
	for _, t := range types {
		for _, m := range words {
			if m != t && v.mapOK(m, t) {
				return &Site{MapAddr: m, TypeAddr: t, FoundBy: "frame scan of " + inner.fn + " and its caller"}
			}
		}
	}
	return nil
}

// Kind numbers of abi.Type (low 5 bits of Kind_ at +23), stable since Go 1.
const kindMap = 21

// typeOK: a map type descriptor has Kind Map, Size_ and PtrBytes of one
// pointer, and non-nil key, elem and group/bucket types.
func (v validator) typeOK(t uint64) bool {
	var b [72]byte
	if t == 0 || t%8 != 0 {
		return false
	}
	if _, err := v.mem.ReadAt(b[:], t); err != nil {
		return false
	}
	size := binary.LittleEndian.Uint64(b[0:])
	ptr := binary.LittleEndian.Uint64(b[8:])
	kind := b[23] & 0x1f
	key := binary.LittleEndian.Uint64(b[48:])
	elem := binary.LittleEndian.Uint64(b[56:])
	grp := binary.LittleEndian.Uint64(b[64:])
	return kind == kindMap && size == 8 && ptr == 8 && key != 0 && elem != 0 && grp != 0
}

// nonEmpty reports whether a validated header holds or held entries.
func (v validator) nonEmpty(m uint64) bool {
	var b [32]byte
	if _, err := v.mem.ReadAt(b[:], m); err != nil {
		return false
	}
	le := binary.LittleEndian
	if v.l.Maps == goruntime.MapClassic {
		return le.Uint64(b[v.l.Classic.Count:]) > 0 || le.Uint64(b[v.l.Classic.Buckets:]) != 0
	}
	return le.Uint64(b[v.l.Swiss.Used:]) > 0 || le.Uint64(b[v.l.Swiss.DirPtr:]) != 0
}

// mapOK checks a header against the layout: counts and sizes within what
// the runtime can produce.
func (v validator) mapOK(m, typ uint64) bool {
	if m == 0 || m%8 != 0 {
		return false
	}
	var b [56]byte
	if _, err := v.mem.ReadAt(b[:48], m); err != nil {
		return false
	}
	le := binary.LittleEndian
	if v.l.Maps == goruntime.MapClassic {
		c := v.l.Classic
		count := le.Uint64(b[c.Count:])
		flags := b[c.Flags]
		bb := b[c.B]
		hash0 := le.Uint32(b[c.Hash0:])
		buckets := le.Uint64(b[c.Buckets:])
		// hash0 is random and set at creation: zeroed memory is no map.
		if count > 1<<40 || bb > 48 || flags&^0x0f != 0 || hash0 == 0 {
			return false
		}
		return buckets != 0 || count == 0
	}
	s := v.l.Swiss
	used := le.Uint64(b[s.Used:])
	dirPtr := le.Uint64(b[s.DirPtr:])
	dirLen := int64(le.Uint64(b[s.DirLen:]))
	depth, shift := b[s.GlobalDepth], b[s.GlobalShift]
	seed := le.Uint64(b[s.Seed:])
	// The seed is 64 random bits set at creation (uintptr(rand())): zeroed
	// memory, or a saved frame whose second word is a code address, is no
	// map (a real seed is below 2^32 once in 4 billion).
	if used > 1<<40 || dirLen < 0 || dirLen > 1<<24 || depth > 63 || seed < 1<<32 {
		return false
	}
	if dirLen == 0 {
		return used <= 8 && depth == 0 && (used == 0 || dirPtr != 0)
	}
	if dirPtr == 0 || dirLen&(dirLen-1) != 0 {
		return false
	}
	// A concurrent writer may be inside installTableSplit, which bumps
	// globalDepth and globalShift before it stores the doubled directory:
	// a crashing map can be torn by one split step.
	log2 := 0
	for int64(1)<<log2 < dirLen {
		log2++
	}
	if d := int(depth) - log2; d < 0 || d > 1 {
		return false
	}
	return int(shift) == 64-int(depth) || int(shift) == 64-log2
}

// userFrame is the innermost frame of an inlining chain that is not the
// runtime's, else the innermost.
func userFrame(fr []symbolizer.Frame) symbolizer.Frame {
	for _, f := range fr {
		if !isRuntime(f.Function) {
			return f
		}
	}
	return fr[0]
}
