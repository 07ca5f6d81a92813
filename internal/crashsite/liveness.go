package crashsite

import (
	"debug/dwarf"
)

// liveness tells whether a stack word belongs to a variable live at its
// frame's PC, from the binary's DWARF locations; without DWARF every word
// counts (what the stack holds is all there is to go by).
type liveness struct {
	d       *DebugInfo
	dw      *dwarf.Data
	bias    uint64
	tab     Symbols
	dropped int
	cache   map[uint64][]dwVar // by function entry
	entries map[uint64]uint64  // pc -> entry
}

func newLiveness(in DiagnoseInput) *liveness {
	l := &liveness{d: in.Debug, bias: in.Bias, tab: in.Table, cache: map[uint64][]dwVar{}, entries: map[uint64]uint64{}}
	if in.Debug != nil && !in.Debug.Stripped {
		if dw, err := in.Debug.DWARF(); err == nil {
			l.dw = dw
		}
	}
	return l
}

// liveVar is a variable live at its frame's PC, at addr on the stack.
type liveVar struct {
	v    dwVar
	addr uint64
	fn   string
	f    frame // the frame whose variable it is
}

// check reports whether the word at addr counts: without DWARF always
// (ok, no variable); with DWARF when a variable of some frame of fs, live
// at that frame's PC, occupies addr.
func (l *liveness) check(fs []frame, sp, addr uint64) (liveVar, bool) {
	if l.dw == nil {
		return liveVar{}, true
	}
	for _, f := range fs {
		if f.pc == 0 {
			continue
		}
		pc := f.pc - 1 - l.bias
		vars, entry, ok := l.vars(pc)
		if !ok {
			continue
		}
		cfa := f.fp + 16
		for _, v := range vars {
			expr, ok := l.d.locAt(v, pc, entry)
			if !ok {
				continue
			}
			ps, err := pieces(expr)
			if err != nil {
				continue
			}
			off := int64(0)
			for _, p := range ps {
				size := p.size
				if size == 0 {
					size = l.size(v.typ)
				}
				if p.onStack && size > 0 {
					lo := uint64(int64(cfa) + p.off)
					if addr >= lo && addr < lo+size {
						return liveVar{v: v, addr: uint64(int64(cfa) + ps[0].off), fn: f.fn, f: f}, true
					}
				}
				off += int64(size)
			}
		}
	}
	l.dropped++
	return liveVar{}, false
}

func (l *liveness) vars(pc uint64) ([]dwVar, uint64, bool) {
	if e, ok := l.entries[pc]; ok {
		vs, ok := l.cache[e]
		return vs, e, ok
	}
	vs, entry, err := l.d.funcVars(pc)
	if err != nil {
		l.entries[pc] = 0
		return nil, 0, false
	}
	l.entries[pc] = entry
	l.cache[entry] = vs
	return vs, entry, true
}

func (l *liveness) size(off dwarf.Offset) uint64 {
	t, err := l.dw.Type(off)
	if err != nil || t.Size() <= 0 {
		return 8
	}
	return uint64(t.Size())
}

// reaches reports whether a live variable's value leads to the map
// through its type (fields, pointers).
func (l *liveness) reaches(in DiagnoseInput, v liveVar) bool {
	if v.v.name == ".closureptr" {
		// Go 1.23+ spills a closure's context pointer under this name
		// (untyped): the captured variables follow the function word.
		return true
	}
	w := &typeWalker{mem: in.Mem, want: in.MapAddr, budget: 256}
	_, ok := w.find(l.dw, v.addr, v.v.typ, 0)
	return ok
}
