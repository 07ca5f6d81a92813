package crashsite

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/mapsentry/mapsentry/goruntime"
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
	Bias uint64
	// Heap locates the map header's memory-profile record (its
	// allocation site), copied while held (CopyPlan.Heap); nil without
	// DWARF, HeapNote then says why.
	Heap     *goruntime.HeapOffsets
	HeapNote string
	MapAddr  uint64
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
	hs := newHolderSearch(in)
	frames := hs.stackHolders(ctx, out)
	out.Holders = append(out.Holders, hs.globalHolders()...)
	if hs.lv.dropped > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("%d stack words holding the map's pointer lay in no live variable (DWARF) and were not counted", hs.lv.dropped))
	}
	sortHolders(out.Holders)
	out.Candidates = holderCandidates(out.Holders)
	name(ctx, in, frames, out)
	return out
}

// holderSearch is one DiagnoseMap's search for the words that hold the
// map. It owns the liveness filter (one per diagnosis: it caches each
// function's DWARF variables and counts the words it drops) and the role
// each goroutine gets in the report, which the crash event and the
// partners decide before any stack is read.
type holderSearch struct {
	in     DiagnoseInput
	lv     *liveness
	role   map[int64]string
	writer map[int64]bool
}

// newHolderSearch gives the crasher and the partners their roles, and marks
// those whose operation writes the map: a writer is what a concurrent map
// error needs, so the report lists writers first.
func newHolderSearch(in DiagnoseInput) *holderSearch {
	hs := &holderSearch{
		in:     in,
		role:   map[int64]string{in.Crasher: "crasher"},
		writer: map[int64]bool{in.Crasher: isWriteOpName(in.CrashOp)},
	}
	for _, p := range in.Partners {
		if _, ok := hs.role[p.Goid]; !ok {
			hs.role[p.Goid] = "partner"
		}
		if isWriteOpName(p.Op) {
			hs.writer[p.Goid] = true
		}
	}
	hs.lv = newLiveness(in)
	return hs
}

// stackHolders walks every user goroutine's stack for the map's pointer,
// adding one holder per goroutine to out (at most maxHolders, within ctx).
// It returns each goroutine's frames for the naming, which looks for the
// map among the crasher's and the partners' locals.
func (hs *holderSearch) stackHolders(ctx context.Context, out *Diagnosis) map[int64][]frame {
	in := hs.in
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
		h, ok := hs.stackHolder(s, fs)
		if !ok {
			continue
		}
		out.Holders = append(out.Holders, h)
		if len(out.Holders) >= maxHolders {
			out.Notes = append(out.Notes, fmt.Sprintf("holders cut at %d", maxHolders))
			break
		}
	}
	return frames
}

// stackHit is the word of a goroutine's stack found holding the map, and
// the live variable occupying it (zero without DWARF).
type stackHit struct {
	kind string // report.HolderFrame, or report.HolderPointer one pointer away
	addr uint64
	lvar liveVar
}

// stackHolder reads goroutine s's stack as it was copied (from SP up,
// at most copyStackBytes) and reports the first word holding the map as a
// holder, with the frame that holds it.
func (hs *holderSearch) stackHolder(s Stack, fs []frame) (report.Holder, bool) {
	buf := make([]byte, s.copyBytes()&^7)
	if _, err := hs.in.Mem.ReadAt(buf, s.SP&^7); err != nil || len(buf) == 0 {
		return report.Holder{}, false
	}
	hit, ok := hs.findHit(fs, s.SP, buf, s.SP&^7)
	if !ok {
		return report.Holder{}, false
	}
	h := report.Holder{Kind: hit.kind, Goid: s.Goid, Addr: hit.addr, Role: hs.role[s.Goid], Writer: hs.writer[s.Goid], Variable: hit.lvar.v.name}
	if h.Role == "" {
		h.Role = "holder"
	}
	if hf, ok := hs.holderFrame(fs, s.SP, hit); ok {
		h.Function, h.File, h.Line = hf.Function, hf.File, hf.Line
	}
	return h, true
}

// findHit looks through the stack words in buf (read at base) for the map:
// direct words first, then one pointer away: a closure context, or a struct
// the frame points to (copied while held, its first holderObjectBytes).
// With DWARF, a word counts only when a variable live at its frame's PC
// occupies it: a dead slot may still hold a stale copy of the pointer.
func (hs *holderSearch) findHit(fs []frame, sp uint64, buf []byte, base uint64) (stackHit, bool) {
	for pass := 0; pass < 2; pass++ {
		for off := 0; off+8 <= len(buf); off += 8 {
			w := binary.LittleEndian.Uint64(buf[off:])
			hit := w == hs.in.MapAddr
			if pass == 1 {
				hit = hs.pointsToMap(w)
			}
			if !hit {
				continue
			}
			a := base + uint64(off)
			lvar, ok := hs.lv.check(fs, sp, a)
			if !ok {
				continue
			}
			// Through a pointer, with DWARF: the variable's type must
			// reach the map (a struct field, a closure's captures), not
			// a neighbour of the object it points to.
			if pass == 1 && lvar.fn != "" && !hs.lv.reaches(hs.in, lvar) {
				continue
			}
			kind := report.HolderFrame
			if pass == 1 {
				kind = report.HolderPointer
			}
			return stackHit{kind: kind, addr: a, lvar: lvar}, true
		}
	}
	return stackHit{}, false
}

// pointsToMap reports whether w points to an object whose first
// holderObjectBytes hold the map's pointer. Mem is the copy made while the
// process was held: a pointer to something not copied is not followed.
func (hs *holderSearch) pointsToMap(w uint64) bool {
	if w < 4096 || w%8 != 0 || w == hs.in.MapAddr {
		return false
	}
	var obj [holderObjectBytes]byte
	if _, err := hs.in.Mem.ReadAt(obj[:], w); err != nil {
		return false
	}
	for k := 0; k+8 <= len(obj); k += 8 {
		if binary.LittleEndian.Uint64(obj[k:]) == hs.in.MapAddr {
			return true
		}
	}
	return false
}

// holderFrame names the frame to blame for hit: the frame of the live
// variable that holds it (DWARF), else the frame whose extent contains the
// word; a go statement's wrapper is named after the function it started.
func (hs *holderSearch) holderFrame(fs []frame, sp uint64, hit stackHit) (symbolizer.Frame, bool) {
	var holdFrame *frame
	switch lvar := hit.lvar; {
	case lvar.fn != "" && !isRuntime(lvar.fn):
		holdFrame = userHolder(fs, lvar.f)
	case lvar.fn != "":
		// A runtime function's variable (mapassign's h): the
		// user frame that called into the runtime holds it.
		holdFrame = callerOf(fs, lvar.f)
	}
	var hf symbolizer.Frame
	ok := false
	if holdFrame != nil {
		hf, ok = frameAt(hs.in.Table, *holdFrame), true
	} else {
		hf, ok = holdingFrame(hs.in.Table, fs, sp, hit.addr)
	}
	if ok && hs.in.Code != nil {
		unwrapGo(hs.in.Code, hs.in.Table, &hf)
	}
	return hf, ok
}

// globalHolders finds the package-level variables that hold the map: every
// word of the data sections (copied whole while held, so bounded by that
// copy), named by the symbol table when it has them.
func (hs *holderSearch) globalHolders() []report.Holder {
	in := hs.in
	if in.Debug == nil {
		return nil
	}
	var out []report.Holder
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
			out = append(out, h)
		}
	}
	return out
}

// holderCandidates are the holder goroutines the partner search did not
// find: they hold the map, so they may be the other side of the race, and
// the report offers them as partner candidates with that evidence.
func holderCandidates(hs []report.Holder) []report.Partner {
	var out []report.Partner
	for _, h := range hs {
		if h.Goid <= 0 || h.Role != "holder" || h.Function == "" {
			continue
		}
		out = append(out, report.Partner{
			Goid: h.Goid, Function: h.Function, File: h.File, Line: h.Line,
			Evidence: report.EvidenceHoldsMap, Rank: report.EvidenceRank(report.EvidenceHoldsMap),
		})
	}
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
