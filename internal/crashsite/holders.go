package crashsite

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// DiagnoseInput is what the diagnosis reads, after the release: a copy of
// the held process's memory (CopyForDiagnosis), the binary's symbols and
// the report's map and partners.
type DiagnoseInput struct {
	Mem   Memory
	Table Symbols
	// Code reads the binary's code (StaticCode), to name a go statement's
	// wrapper after the function it started; nil: not done.
	Code Memory
	// Debug is the binary's symbol table and DWARF; nil when unreadable.
	Debug *DebugInfo
	// Bias is the PIE load bias: run-time address = link address + Bias.
	Bias    uint64
	MapAddr uint64
	// TypeAddr is the map's type descriptor (for a sync.Map's any value).
	TypeAddr uint64
	Stacks   []Stack
	// Crasher is the crashing goroutine; Partners the report's partners.
	Crasher  int64
	CrashOp  string
	Partners []report.Partner
}

// Diagnosis is what the holder search and the naming found.
type Diagnosis struct {
	Variable *report.Variable
	Holders  []report.Holder
	SyncMap  string
	// Candidates are holder goroutines that are not yet partners: partner
	// candidates with evidence holds_map.
	Candidates []report.Partner
	Notes      []string
}

// Bounds of the analysis.
const (
	maxHolders      = 256
	maxTypeWalk     = 4096 // memory reads of typed walks, all variables together
	maxFieldDepth   = 3    // pointers followed in a typed walk
	maxSyncMapNodes = 4096
)

// DiagnoseMap finds who holds the map (goroutine frames, objects they
// point to, globals), names the map, and says whether a package-level
// sync.Map stores it. Bounded by ctx and the constants above.
func DiagnoseMap(ctx context.Context, in DiagnoseInput) *Diagnosis {
	out := &Diagnosis{}
	if in.MapAddr == 0 {
		out.Notes = append(out.Notes, "the map was not located: nothing to name or hold")
		return out
	}
	role := map[int64]string{in.Crasher: "crasher"}
	writer := map[int64]bool{in.Crasher: isWriteOpName(in.CrashOp)}
	for _, p := range in.Partners {
		if _, ok := role[p.Goid]; !ok {
			role[p.Goid] = "partner"
		}
		if isWriteOpName(p.Op) {
			writer[p.Goid] = true
		}
	}
	lv := newLiveness(in)
	frames := map[int64][]frame{}
	for _, s := range in.Stacks {
		if ctx.Err() != nil {
			out.Notes = append(out.Notes, "holder search cut by its deadline")
			break
		}
		if start, ok := in.Table.FuncForPC(s.StartPC); ok && symbolizer.IsSystem(start.Name) {
			continue
		}
		fs := walkFrom(in.Mem, in.Table, s.PC, s.SP, s.BP)
		frames[s.Goid] = fs
		n := uint64(copyStackBytes)
		if s.Hi > s.SP && s.Hi-s.SP < n {
			n = s.Hi - s.SP
		}
		buf := make([]byte, n&^7)
		if _, err := in.Mem.ReadAt(buf, s.SP&^7); err != nil || len(buf) == 0 {
			continue
		}
		base := s.SP &^ 7
		kind, at, holdVar := "", uint64(0), ""
		var holdFrame *frame
		// Direct words first, then one pointer away: a closure context,
		// or a struct the frame points to (copied while held, its first
		// holderObjectBytes). With DWARF, a word counts only when a
		// variable live at its frame's PC occupies it: a dead slot may
		// still hold a stale copy of the pointer.
		for pass := 0; pass < 2 && kind == ""; pass++ {
			for off := 0; off+8 <= len(buf); off += 8 {
				w := binary.LittleEndian.Uint64(buf[off:])
				hit := false
				if pass == 0 {
					hit = w == in.MapAddr
				} else if w >= 4096 && w%8 == 0 && w != in.MapAddr {
					var obj [holderObjectBytes]byte
					if _, err := in.Mem.ReadAt(obj[:], w); err == nil {
						for k := 0; k+8 <= len(obj); k += 8 {
							if binary.LittleEndian.Uint64(obj[k:]) == in.MapAddr {
								hit = true
								break
							}
						}
					}
				}
				if !hit {
					continue
				}
				a := base + uint64(off)
				lvar, ok := lv.check(fs, s.SP, a)
				if !ok {
					continue
				}
				// Through a pointer, with DWARF: the variable's type must
				// reach the map (a struct field, a closure's captures), not
				// a neighbour of the object it points to.
				if pass == 1 && lvar.fn != "" && !lv.reaches(in, lvar) {
					continue
				}
				kind, at, holdVar = report.HolderFrame, a, lvar.v.name
				switch {
				case lvar.fn != "" && !isRuntime(lvar.fn):
					holdFrame = userHolder(fs, lvar.f)
				case lvar.fn != "":
					// A runtime function's variable (mapassign's h): the
					// user frame that called into the runtime holds it.
					holdFrame = callerOf(fs, lvar.f)
				}
				if pass == 1 {
					kind = report.HolderPointer
				}
				break
			}
		}
		if kind == "" {
			continue
		}
		h := report.Holder{Kind: kind, Goid: s.Goid, Addr: at, Role: role[s.Goid], Writer: writer[s.Goid], Variable: holdVar}
		if h.Role == "" {
			h.Role = "holder"
		}
		// The frame of the live variable that holds it (DWARF), else the
		// frame whose extent contains the word.
		var hf symbolizer.Frame
		ok := false
		if holdFrame != nil {
			hf, ok = frameAt(in.Table, *holdFrame), true
		} else {
			hf, ok = holdingFrame(in.Table, fs, s.SP, at)
		}
		if ok {
			if in.Code != nil {
				unwrapGo(in.Code, in.Table, &hf)
			}
			h.Function, h.File, h.Line = hf.Function, hf.File, hf.Line
		}
		out.Holders = append(out.Holders, h)
		if len(out.Holders) >= maxHolders {
			out.Notes = append(out.Notes, fmt.Sprintf("holders cut at %d", maxHolders))
			break
		}
	}
	// Globals: the data sections' words.
	if in.Debug != nil {
		for _, sec := range in.Debug.Sections {
			buf := make([]byte, sec.Size&^7)
			if _, err := in.Mem.ReadAt(buf, sec.Addr+in.Bias); err != nil {
				continue
			}
			for off := 0; off+8 <= len(buf); off += 8 {
				if binary.LittleEndian.Uint64(buf[off:]) != in.MapAddr {
					continue
				}
				a := sec.Addr + uint64(off)
				h := report.Holder{Kind: report.HolderGlobal, Addr: a + in.Bias, Role: "global"}
				if g, ok := in.Debug.global(a); ok {
					h.Variable = g.name
					if a != g.addr {
						h.Variable = fmt.Sprintf("%s+%#x", g.name, a-g.addr)
					}
				}
				out.Holders = append(out.Holders, h)
			}
		}
	}
	if lv.dropped > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("%d stack words holding the map's pointer lay in no live variable (DWARF) and were not counted", lv.dropped))
	}
	sortHolders(out.Holders)
	// Partner candidates: holders not already partners.
	for _, h := range out.Holders {
		if h.Goid <= 0 || h.Role != "holder" || h.Function == "" {
			continue
		}
		out.Candidates = append(out.Candidates, report.Partner{
			Goid: h.Goid, Function: h.Function, File: h.File, Line: h.Line,
			Evidence: report.EvidenceHoldsMap, Rank: report.EvidenceRank(report.EvidenceHoldsMap),
		})
	}
	name(ctx, in, frames, out)
	return out
}

func isWriteOpName(op string) bool { return op == "assign" || op == "delete" || op == "clear" }

// sortHolders: writers first, then the crasher and partners, then the
// other goroutines, then globals; by goroutine id within.
func sortHolders(hs []report.Holder) {
	rank := func(h report.Holder) int {
		switch {
		case h.Writer:
			return 0
		case h.Role == "crasher" || h.Role == "partner":
			return 1
		case h.Kind == report.HolderGlobal:
			return 3
		}
		return 2
	}
	sort.SliceStable(hs, func(i, j int) bool {
		ri, rj := rank(hs[i]), rank(hs[j])
		if ri != rj {
			return ri < rj
		}
		return hs[i].Goid < hs[j].Goid
	})
}

// holdingFrame names the frame whose stack slot at holds the pointer: the
// innermost user frame whose extent (from its callee's CFA up to its own
// CFA plus its argument spill area) contains at. Runtime frames (goexit
// above a goroutine's first function) give way to the user frame below.
func holdingFrame(tab Symbols, fs []frame, sp, at uint64) (symbolizer.Frame, bool) {
	lo := sp
	var last *frame
	for i := range fs {
		f := &fs[i]
		cfa := f.fp + 16
		if at >= lo && at < cfa+argSpill {
			if !isRuntime(f.fn) && f.fn != "" {
				return frameAt(tab, *f), true
			}
			if last != nil {
				return frameAt(tab, *last), true
			}
		}
		if !isRuntime(f.fn) && f.fn != "" {
			last = f
		}
		lo = cfa
	}
	if last != nil {
		return frameAt(tab, *last), true
	}
	return symbolizer.Frame{}, false
}

// holderObjectBytes is how much of an object a frame points to is
// looked at for the map's pointer: a closure context's captured
// variables, a struct's first fields. Small, so that a neighbouring
// object in the same span is not taken for the pointed-to one.
const holderObjectBytes = 64

// argSpill is the register-ABI spill area above a frame's CFA counted as
// the frame's own (its arguments): at most 9 integer registers.
const argSpill = 9 * 8

func frameAt(tab Symbols, f frame) symbolizer.Frame {
	if frs := tab.PCToFrames(f.pc - 1); len(frs) > 0 {
		c := userFrame(frs)
		c.PC = f.pc
		return c
	}
	return symbolizer.Frame{Function: f.fn, PC: f.pc}
}

// userHolder is the frame to name for a variable of frame f: f itself,
// or — when f is a go statement's wrapper (main.main.gowrap1), which
// holds the arguments it passes — the function the go statement started.
func userHolder(fs []frame, f frame) *frame {
	if !isGoWrapper(f.fn) {
		return &f
	}
	// The user frame nearest below the wrapper (frames are innermost
	// first; those below it have smaller frame pointers).
	var best *frame
	for i := range fs {
		g := fs[i]
		if g.fp < f.fp && g.fn != "" && !isRuntime(g.fn) && !isGoWrapper(g.fn) && (best == nil || g.fp > best.fp) {
			best = &g
		}
	}
	if best == nil {
		return &f
	}
	return best
}

// callerOf is the innermost user frame above (outside) f, nil if none.
func callerOf(fs []frame, f frame) *frame {
	for i := range fs {
		if g := fs[i]; g.fp > f.fp && g.fn != "" && !isRuntime(g.fn) {
			return &g
		}
	}
	return nil
}
