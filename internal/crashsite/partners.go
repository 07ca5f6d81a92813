package crashsite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// Fatal is another thread's crash-probe hit, with its registers.
type Fatal struct {
	TID  int
	Goid int64
	Regs Regs
}

// PartnerInput is everything Partners looks at.
type PartnerInput struct {
	Mem   Memory
	Table Symbols
	// Layout gives the g.sched offsets for parked goroutines.
	Layout *goruntime.Layout
	// Site is the located map; CrasherGoid the goroutine it came from.
	Site        *Site
	CrasherGoid int64
	// Others are the other fatal events (other threads).
	Others []Fatal
	// Goroutines and Threads come from the frozen snapshot.
	Goroutines []symbolizer.RawGoroutine
	Threads    map[int]symbolizer.Registers
}

// Budgets: a process with 10,000 goroutines must not turn partner search
// into a full memory read.
const (
	maxStackScan = 4 << 10 // bytes of each goroutine's stack looked at
	maxTotalScan = 8 << 20 // bytes of stacks looked at in all
	maxPartners  = 64
)

// Partners ranks the other goroutines by the evidence that they were on
// the map: another thread that hit fatal on the same map; a goroutine
// frozen inside a map function on the same map (spill slots); a goroutine
// running user code on another thread at the freeze; a goroutine whose
// stack holds the map's address. note says why the list is empty or cut.
func Partners(in PartnerInput) (partners []report.Partner, note string) {
	if in.Site == nil {
		return nil, "the map was not located, so no goroutine can be tied to it"
	}
	ps := &partnerSearch{in: in, v: validator{mem: in.Mem, l: in.Layout}, best: map[int64]report.Partner{}}
	ps.fromOtherFatals()
	for i := range in.Goroutines {
		ps.fromGoroutine(&in.Goroutines[i])
	}
	partners = ps.ranked()
	switch {
	case len(partners) == 0:
		note = fmt.Sprintf("none of the %d goroutines was found on the map: no other fatal event on it, none frozen in a map function on it, none running user code, no stack holding its address", len(in.Goroutines))
	case ps.truncated:
		note = "partner search was cut by its budget; the list may be incomplete"
	}
	return partners, note
}

// partnerSearch is one Partners call: the strongest evidence found so far
// for each goroutine, and the stack-scan budget all goroutines share.
type partnerSearch struct {
	in        PartnerInput
	v         validator
	best      map[int64]report.Partner
	scanned   int  // stack bytes read, against maxTotalScan
	truncated bool // a budget cut the search or the list
}

// add keeps p when it is the strongest evidence yet for its goroutine,
// naming a go statement's wrapper after the function it started.
func (ps *partnerSearch) add(p report.Partner) {
	if isGoWrapper(p.Function) {
		c := &symbolizer.Frame{Function: p.Function, File: p.File, Line: p.Line, PC: p.PC}
		unwrapGo(ps.in.Mem, ps.in.Table, c)
		p.Function, p.File, p.Line = c.Function, c.File, c.Line
	}
	p.Rank = report.EvidenceRank(p.Evidence)
	if old, ok := ps.best[p.Goid]; ok && old.Rank <= p.Rank {
		return
	}
	ps.best[p.Goid] = p
}

// fromOtherFatals adds the goroutines of other threads' fatal events on
// the same map: the strongest evidence, the runtime itself saw them race.
func (ps *partnerSearch) fromOtherFatals() {
	in := ps.in
	for _, f := range in.Others {
		if f.Goid == in.CrasherGoid {
			continue
		}
		s, err := FindMap(in.Mem, in.Table, in.Layout, f.Regs)
		if err != nil || s.MapAddr != in.Site.MapAddr {
			continue
		}
		ps.add(fromSite(f.Goid, f.TID, s, report.EvidenceFatalSameMap))
	}
}

// fromGoroutine looks for the best evidence that g was on the map, from
// strongest to weakest: frozen in a map function on it, running user code,
// its stack holding the map's address.
func (ps *partnerSearch) fromGoroutine(g *symbolizer.RawGoroutine) {
	st, ok := ps.candidate(g)
	if !ok {
		return
	}
	pc, sp, bp, ok := resumePoint(ps.in, g)
	if !ok {
		return
	}
	frames := walkFrom(ps.in.Mem, ps.in.Table, pc, sp, bp)
	if ps.inMapFunction(g, frames) {
		return
	}
	userSite := callSite(ps.in.Table, frames)
	if st == goruntime.GRunning && userSite != nil {
		ps.add(partnerAt(g.ID, g.TID, userSite, report.EvidenceRunning))
		return
	}
	ps.stackHolds(g, sp, frames, userSite)
}

// candidate reports whether g is worth looking at, and its status: not the
// crasher, not already tied to the map by a fatal event, alive, and not a
// runtime system goroutine.
func (ps *partnerSearch) candidate(g *symbolizer.RawGoroutine) (status uint32, ok bool) {
	if g.ID == ps.in.CrasherGoid || g.ID <= 0 {
		return 0, false
	}
	if _, done := ps.best[g.ID]; done {
		return 0, false
	}
	st := g.Status &^ goruntime.GScan
	if st == goruntime.GDead || st == goruntime.GIdle {
		return 0, false
	}
	if start, ok := ps.in.Table.FuncForPC(g.StartPC); ok && symbolizer.IsSystem(start.Name) {
		return 0, false
	}
	return st, true
}

// inMapFunction adds g when one of its frames is a map function whose
// spill slots validate as the crashing map.
func (ps *partnerSearch) inMapFunction(g *symbolizer.RawGoroutine, frames []frame) bool {
	for j, f := range frames {
		if !IsMapFunction(f.fn) {
			continue
		}
		if s := ps.v.fromSpills(f); s != nil && s.MapAddr == ps.in.Site.MapAddr {
			ps.add(fromSite(g.ID, g.TID, attribute(s, ps.in.Table, frames, j), report.EvidenceMapFunction))
			return true
		}
	}
	return false
}

// stackHolds adds g when the start of its stack holds the map's address,
// naming the frame whose locals hold it. Each scan is bounded by
// maxStackScan, all of them together by maxTotalScan.
func (ps *partnerSearch) stackHolds(g *symbolizer.RawGoroutine, sp uint64, frames []frame, userSite *symbolizer.Frame) {
	if ps.scanned >= maxTotalScan {
		ps.truncated = true
		return
	}
	n, at := scanFor(ps.in.Mem, sp, g, ps.in.Layout, ps.in.Site.MapAddr)
	ps.scanned += n
	if at == 0 {
		return
	}
	// Name the frame whose locals hold the pointer: the innermost
	// frame whose saved-BP slot lies above the hit.
	owner := frames
	for k, f := range frames {
		if f.fp > at {
			owner = frames[k:]
			break
		}
	}
	if site := callSite(ps.in.Table, owner); site != nil {
		ps.add(partnerAt(g.ID, g.TID, site, report.EvidenceStackHoldsMap))
	} else if userSite != nil {
		ps.add(partnerAt(g.ID, g.TID, userSite, report.EvidenceStackHoldsMap))
	}
}

// ranked lists the partners found, strongest evidence first, then by
// goroutine id, cut at maxPartners.
func (ps *partnerSearch) ranked() []report.Partner {
	var partners []report.Partner
	for _, p := range ps.best {
		partners = append(partners, p)
	}
	sort.Slice(partners, func(i, j int) bool {
		if partners[i].Rank != partners[j].Rank {
			return partners[i].Rank < partners[j].Rank
		}
		return partners[i].Goid < partners[j].Goid
	})
	if len(partners) > maxPartners {
		partners = partners[:maxPartners]
		ps.truncated = true
	}
	return partners
}

func fromSite(goid int64, tid int, s *Site, evidence string) report.Partner {
	p := report.Partner{Goid: goid, TID: tid, Op: s.Op, MapFunction: s.MapFunction, Evidence: evidence}
	if c := s.CallSite; c != nil {
		p.Function, p.File, p.Line, p.PC = c.Function, c.File, c.Line, c.PC
	}
	return p
}

func partnerAt(goid int64, tid int, c *symbolizer.Frame, evidence string) report.Partner {
	return report.Partner{Goid: goid, TID: tid, Function: c.Function, File: c.File, Line: c.Line, PC: c.PC, Evidence: evidence}
}

// resumePoint is where a goroutine's stack walk starts: its thread's
// registers when it runs, its saved scheduling context (g.sched) when not.
func resumePoint(in PartnerInput, g *symbolizer.RawGoroutine) (pc, sp, bp uint64, ok bool) {
	return resumeAt(in.Mem, in.Table, in.Layout, in.Threads, g)
}

func resumeAt(mem Memory, tab Symbols, l *goruntime.Layout, threads map[int]symbolizer.Registers, g *symbolizer.RawGoroutine) (pc, sp, bp uint64, ok bool) {
	gl := l.G
	var b [8]byte
	read := func(off goruntime.Offset) uint64 {
		if !off.Known() || g.Addr == 0 {
			return 0
		}
		if _, err := mem.ReadAt(b[:], g.Addr+uint64(off)); err != nil {
			return 0
		}
		return binary.LittleEndian.Uint64(b[:])
	}
	if r, running := threads[g.TID]; running && g.TID != 0 && (g.Status&^goruntime.GScan) == goruntime.GRunning {
		// A thread on its system or signal stack is off the goroutine's
		// stack: its frames start at the signal frame's registers, else at
		// g.sched (saved by systemstack).
		lo, hi := read(gl.StackLo), read(gl.StackHi)
		if hi == 0 || (r.SP >= lo && r.SP < hi) {
			return r.PC, r.SP, r.BP, r.PC != 0
		}
		// In a signal handler: g.sched may be long stale, the kernel's
		// signal frame has where the goroutine really was.
		known := func(pc uint64) bool { _, ok := tab.FuncForPC(pc); return ok }
		if pc, sp, bp, ok := symbolizer.SignalContext(mem, r.SP, lo, hi, known); ok {
			return pc, sp, bp, true
		}
	}
	if !gl.SchedPC.Known() || !gl.SchedSP.Known() || !gl.SchedBP.Known() || g.Addr == 0 {
		return 0, 0, 0, false
	}
	pc, sp, bp = read(gl.SchedPC), read(gl.SchedSP), read(gl.SchedBP)
	return pc, sp, bp, pc != 0 && sp != 0
}

// walkFrom walks the stack of a goroutine stopped at pc with stack pointer
// sp and frame pointer bp, innermost first. The innermost frame comes from
// the pclntab (pcsp): a thread can stop anywhere, also in a prologue or
// epilogue where BP is still the caller's — taking BP's frame for the
// function at pc would drop its caller (the user function that called
// into the map). Above it, callers are at call sites and the frame-pointer
// chain is exact. Without pcsp for pc, the function at pc is assumed to
// own the frame at bp (past its prologue, as at a call or preemption).
func walkFrom(mem Memory, tab Symbols, pc, sp, bp uint64) []frame {
	f, ok := tab.FuncForPC(pc)
	if !ok {
		return nil
	}
	word := func(addr uint64) (uint64, bool) {
		var b [8]byte
		if _, err := mem.ReadAt(b[:], addr); err != nil {
			return 0, false
		}
		return binary.LittleEndian.Uint64(b[:]), true
	}
	var fp, ret, up uint64
	if d, err := tab.SPDelta(&f, pc); err == nil && sp != 0 && d < 1<<24 {
		// The return address sits just above the frame, the frame's
		// saved-BP slot just below that.
		fp = sp + uint64(d) - 8
		if ret, ok = word(sp + uint64(d)); !ok {
			return nil
		}
		up = bp
		if bp == fp {
			if up, ok = word(fp); !ok {
				return []frame{{fp: fp, pc: pc + 1, fn: f.Name}}
			}
		}
	} else {
		if bp == 0 {
			return nil
		}
		fp = bp
		if ret, ok = word(bp + 8); !ok {
			return []frame{{fp: fp, pc: pc + 1, fn: f.Name}}
		}
		if up, ok = word(bp); !ok {
			return []frame{{fp: fp, pc: pc + 1, fn: f.Name}}
		}
	}
	out := []frame{{fp: fp, pc: pc + 1, fn: f.Name}}
	if up <= fp {
		return out
	}
	return append(out, walk(mem, tab, Regs{BP: up, RetAddr: ret})...)
}

// scanFor looks for addr in the first maxStackScan bytes of a goroutine's
// stack above sp (bounded by the stack's top). It returns the bytes read
// and the address of the first word holding addr, or 0.
func scanFor(mem Memory, sp uint64, g *symbolizer.RawGoroutine, l *goruntime.Layout, addr uint64) (int, uint64) {
	if sp == 0 {
		return 0, 0
	}
	n := uint64(maxStackScan)
	if l.G.StackHi.Known() && g.Addr != 0 {
		var b [8]byte
		if _, err := mem.ReadAt(b[:], g.Addr+uint64(l.G.StackHi)); err == nil {
			if hi := binary.LittleEndian.Uint64(b[:]); hi > sp && hi-sp < n {
				n = hi - sp
			}
		}
	}
	buf := make([]byte, n&^7)
	if len(buf) == 0 {
		return 0, 0
	}
	base := sp &^ 7
	if _, err := mem.ReadAt(buf, base); err != nil {
		return 0, 0
	}
	var want [8]byte
	binary.LittleEndian.PutUint64(want[:], addr)
	for off := 0; off+8 <= len(buf); off += 8 {
		if bytes.Equal(buf[off:off+8], want[:]) {
			return len(buf), base + uint64(off)
		}
	}
	return len(buf), 0
}
