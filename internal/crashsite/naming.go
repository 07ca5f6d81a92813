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
	w := &typeWalker{mem: in.Mem, want: in.MapAddr, budget: maxTypeWalk}
	// 1. A package-level variable whose word is the map.
	for _, h := range out.Holders {
		if h.Kind != report.HolderGlobal {
			continue
		}
		g, ok := d.global(h.Addr - in.Bias)
		if !ok {
			continue
		}
		if h.Addr-in.Bias == g.addr && g.size == 8 {
			out.Variable = &report.Variable{Name: g.name, Source: report.SourceSymbolTable}
			break
		}
		// Inside a bigger variable: a struct field, which DWARF names.
		if dw, err := d.DWARF(); err == nil {
			if v, ok := d.dwGlobals()[g.addr]; ok {
				if path, ok := w.find(dw, g.addr+in.Bias, v.typ, 0); ok {
					out.Variable = &report.Variable{Name: g.name + path, Source: report.SourceDWARFField}
					break
				}
			}
		}
	}
	dw, dwErr := d.DWARF()
	if dwErr != nil {
		out.Notes = append(out.Notes, "no DWARF: locals, fields and sync.Map not looked at")
	}
	// 2. Locals and arguments of the crashing frame, then the partners'.
	if out.Variable == nil && dwErr == nil {
		order := []int64{in.Crasher}
		for _, p := range in.Partners {
			order = append(order, p.Goid)
		}
		for _, goid := range order {
			if ctx.Err() != nil {
				break
			}
			if v := nameLocal(d, dw, w, in, frames[goid]); v != nil {
				out.Variable = v
				break
			}
		}
	}
	// 3. A field reached through a package-level pointer.
	if dwErr == nil && ctx.Err() == nil {
		globs := d.dwGlobals()
		addrs := make([]uint64, 0, len(globs))
		for a := range globs {
			addrs = append(addrs, a)
		}
		sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
		for _, a := range addrs {
			if ctx.Err() != nil || w.budget <= 0 {
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
			if out.Variable == nil {
				if path, ok := w.find(dw, a+in.Bias, v.typ, 0); ok && path != "" {
					out.Variable = &report.Variable{Name: v.name + path, Source: report.SourceDWARFField}
				}
			}
			if out.SyncMap == "" && isSyncMap(typ) && in.TypeAddr != 0 {
				if syncMapHolds(in.Mem, a+in.Bias, in.TypeAddr, in.MapAddr) {
					out.SyncMap = v.name
				}
			}
		}
	}
	if out.Variable == nil {
		out.Variable = &report.Variable{Source: report.SourceTypeOnly}
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
