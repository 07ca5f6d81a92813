package crashsite

import (
	"context"
	"debug/dwarf"
	"encoding/binary"
	"sort"
	"strings"

	"github.com/mapsentry/mapsentry/report"
)

// name names the map from what the binary offers, in order: a
// package-level variable holding it (symbol table; a field of one with
// DWARF); a local or argument of the crashing or a partner frame, or a
// field reached from one (DWARF locations and types); a field reached
// through a package-level pointer (DWARF). Stripped binaries get
// "unknown (stripped)"; the sync.Map check needs DWARF too.
func name(ctx context.Context, in DiagnoseInput, frames map[int64][]frame, out *Diagnosis) {
	d := in.Debug
	if d == nil || d.Stripped {
		out.Variable = &report.Variable{Name: report.UnknownStripped, Source: report.SourceStripped}
		return
	}
	n := &namer{in: in, d: d, w: &typeWalker{mem: in.Mem, want: in.MapAddr, budget: maxTypeWalk}, out: out}
	n.fromGlobalHolders()
	dw, dwErr := d.DWARF()
	if dwErr != nil {
		out.Notes = append(out.Notes, "no DWARF: locals, fields and sync.Map not looked at")
	}
	if out.Variable == nil && dwErr == nil {
		n.fromFrames(ctx, dw, frames)
	}
	if dwErr == nil && ctx.Err() == nil {
		n.throughGlobals(ctx, dw)
	}
	if out.Variable == nil {
		out.Variable = &report.Variable{Source: report.SourceTypeOnly}
		if dwErr == nil && ctx.Err() == nil {
			allocSite(in, out.Variable, out)
		}
	}
}

// namer is one naming of the map: the binary's debug information, and the
// typed walker whose read budget (maxTypeWalk) all the ways of naming
// share. It fills out.Variable, first found wins, and out.SyncMap.
type namer struct {
	in  DiagnoseInput
	d   *DebugInfo
	w   *typeWalker
	out *Diagnosis
}

// fromGlobalHolders names the map after a package-level variable whose
// word holds it: the symbol's name when the word is the whole variable,
// else the field path DWARF gives inside it.
func (n *namer) fromGlobalHolders() {
	for _, h := range n.out.Holders {
		if h.Kind != report.HolderGlobal {
			continue
		}
		if v := n.globalHolder(h); v != nil {
			n.out.Variable = v
			return
		}
	}
}

// globalHolder names the global holder h, or nil.
func (n *namer) globalHolder(h report.Holder) *report.Variable {
	g, ok := n.d.global(h.Addr - n.in.Bias)
	if !ok {
		return nil
	}
	if h.Addr-n.in.Bias == g.addr && g.size == 8 {
		return &report.Variable{Name: g.name, Source: report.SourceSymbolTable}
	}
	// Inside a bigger variable: a struct field, which DWARF names.
	dw, err := n.d.DWARF()
	if err != nil {
		return nil
	}
	v, ok := n.d.dwGlobals()[g.addr]
	if !ok {
		return nil
	}
	if path, ok := n.w.find(dw, g.addr+n.in.Bias, v.typ, 0); ok {
		return &report.Variable{Name: g.name + path, Source: report.SourceDWARFField}
	}
	return nil
}

// fromFrames names the map after a local or argument of the crashing
// goroutine's frames, then of each partner's: the code that was using
// the map when it crashed.
func (n *namer) fromFrames(ctx context.Context, dw *dwarf.Data, frames map[int64][]frame) {
	order := []int64{n.in.Crasher}
	for _, p := range n.in.Partners {
		order = append(order, p.Goid)
	}
	for _, goid := range order {
		if ctx.Err() != nil {
			break
		}
		if v := nameLocal(n.d, dw, n.w, n.in, frames[goid]); v != nil {
			n.out.Variable = v
			break
		}
	}
}

// throughGlobals follows each user package-level variable's type, in
// address order (so the same binary names the same way), to name the map
// after a field reached through pointers when nothing named it yet, and
// to find a sync.Map that stores it. Bounded by ctx and the walk budget.
func (n *namer) throughGlobals(ctx context.Context, dw *dwarf.Data) {
	globs := n.d.dwGlobals()
	addrs := make([]uint64, 0, len(globs))
	for a := range globs {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
	for _, a := range addrs {
		if ctx.Err() != nil || n.w.budget <= 0 {
			break
		}
		v := globs[a]
		if !isUserSymbol(v.name) {
			continue
		}
		typ, err := dw.Type(v.typ)
		if err != nil {
			continue
		}
		if n.out.Variable == nil {
			if path, ok := n.w.find(dw, a+n.in.Bias, v.typ, 0); ok && path != "" {
				n.out.Variable = &report.Variable{Name: v.name + path, Source: report.SourceDWARFField}
			}
		}
		if n.out.SyncMap == "" && isSyncMap(typ) && n.in.TypeAddr != 0 {
			if syncMapHolds(n.in.Mem, a+n.in.Bias, n.in.TypeAddr, n.in.MapAddr) {
				n.out.SyncMap = v.name
			}
		}
	}
}

// nameLocal looks at the user frames of one goroutine for a variable that
// is the map or reaches it through fields.
func nameLocal(d *DebugInfo, dw *dwarf.Data, w *typeWalker, in DiagnoseInput, fs []frame) *report.Variable {
	for _, f := range fs {
		if f.fn == "" || isRuntime(f.fn) || f.pc == 0 {
			continue
		}
		pc := f.pc - 1 - in.Bias
		vars, entry, err := d.funcVars(pc)
		if err != nil {
			continue
		}
		cfa := f.fp + 16
		for _, v := range vars {
			expr, ok := d.locAt(v, pc, entry)
			if !ok {
				continue
			}
			ps, err := pieces(expr)
			if err != nil || len(ps) == 0 {
				continue
			}
			// A whole variable on the stack, or the first piece of one
			// (a struct split into registers and slots).
			p := ps[0]
			if !p.onStack {
				continue
			}
			addr := uint64(int64(cfa) + p.off)
			if path, ok := w.find(dw, addr, v.typ, 0); ok {
				if path == "" {
					return &report.Variable{Name: v.name, Source: report.SourceDWARFLocal, Function: f.fn}
				}
				return &report.Variable{Name: v.name + path, Source: report.SourceDWARFField, Function: f.fn}
			}
		}
	}
	return nil
}

// typeWalker follows a variable's DWARF type through struct fields and
// pointers (at most maxFieldDepth) to a map-typed word equal to want.
type typeWalker struct {
	mem    Memory
	want   uint64
	budget int
}

// find returns the field path ("" for the variable itself, ".sessions",
// ".cfg.sessions") to the map, reading the value at addr.
func (w *typeWalker) find(dw *dwarf.Data, addr uint64, off dwarf.Offset, depth int) (string, bool) {
	t, err := dw.Type(off)
	if err != nil {
		return "", false
	}
	return w.findType(t, addr, depth, 0)
}

func (w *typeWalker) word(addr uint64) (uint64, bool) {
	if w.budget <= 0 {
		return 0, false
	}
	w.budget--
	var b [8]byte
	if _, err := w.mem.ReadAt(b[:], addr); err != nil {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[:]), true
}

func (w *typeWalker) findType(t dwarf.Type, addr uint64, depth, nest int) (string, bool) {
	if nest > 8 || w.budget <= 0 {
		return "", false
	}
	switch x := t.(type) {
	case *dwarf.TypedefType:
		if strings.HasPrefix(x.Name, "map[") {
			v, ok := w.word(addr)
			return "", ok && v == w.want
		}
		return w.findType(x.Type, addr, depth, nest+1)
	case *dwarf.StructType:
		if isSyncMap(x) || len(x.Field) > 256 {
			return "", false
		}
		for _, f := range x.Field {
			if f.ByteOffset < 0 || f.Name == "" {
				continue
			}
			if path, ok := w.findType(f.Type, addr+uint64(f.ByteOffset), depth, nest+1); ok {
				return "." + f.Name + path, true
			}
		}
	case *dwarf.PtrType:
		if strings.HasPrefix(x.Name, "map[") || strings.HasPrefix(x.Type.String(), "hash<") {
			v, ok := w.word(addr)
			return "", ok && v == w.want
		}
		if depth >= maxFieldDepth {
			return "", false
		}
		if _, ok := x.Type.(*dwarf.StructType); !ok {
			if td, ok := x.Type.(*dwarf.TypedefType); !ok || !isStructTypedef(td) {
				return "", false
			}
		}
		p, ok := w.word(addr)
		if !ok || p == 0 {
			return "", false
		}
		return w.findType(x.Type, p, depth+1, nest+1)
	}
	return "", false
}

func isStructTypedef(td *dwarf.TypedefType) bool {
	_, ok := td.Type.(*dwarf.StructType)
	return ok
}

func isSyncMap(t dwarf.Type) bool {
	for i := 0; i < 8; i++ {
		switch x := t.(type) {
		case *dwarf.TypedefType:
			if x.Name == "sync.Map" {
				return true
			}
			t = x.Type
		case *dwarf.StructType:
			return x.StructName == "sync.Map"
		default:
			return false
		}
	}
	return false
}

// syncMapHolds reports whether a sync.Map at addr stores the map as a
// value: an interface word pair (the map's type, the map) among the
// objects reachable from it within a few pointers — HashTrieMap nodes
// (Go 1.24+), or the read/dirty map's buckets and entries before. Only
// memory copied while the process was held is read; bounded.
func syncMapHolds(mem Memory, addr, typ, m uint64) bool {
	seen := map[uint64]bool{}
	level := []uint64{addr}
	size := uint64(64) // the sync.Map itself
	nodes := 0
	for depth := 0; depth <= copyMaxDepth && len(level) > 0; depth++ {
		var next []uint64
		for _, a := range level {
			if nodes >= maxSyncMapNodes {
				return false
			}
			nodes++
			buf := make([]byte, size)
			if _, err := mem.ReadAt(buf, a); err != nil {
				// The object may end before size: try a smaller read.
				buf = buf[:64]
				if _, err := mem.ReadAt(buf, a); err != nil {
					continue
				}
			}
			for off := 0; off+8 <= len(buf); off += 8 {
				w := binary.LittleEndian.Uint64(buf[off:])
				if w == typ && off+16 <= len(buf) && binary.LittleEndian.Uint64(buf[off+8:]) == m {
					return true
				}
				if nearMap(w, m) && !seen[w] && w != m {
					seen[w] = true
					next = append(next, w)
				}
			}
		}
		level, size = next, copyObjectBytes
	}
	return false
}
