package capture

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// FlightRecorder is what the flight-recorder stage reads of the BPF side
// (bpf.MapOps).
type FlightRecorder interface {
	// ThreadOp is the thread's last read or iteration.
	ThreadOp(tid uint32) (bpf.MapOp, bool, error)
	// ThreadWrite is the thread's newest write still in any map's ring.
	ThreadWrite(pid, tid uint32) (bpf.MapOp, bool, error)
	// Writers are the map's last writes, newest first.
	Writers(pid uint32, addr uint64) ([]bpf.MapOp, error)
}

// FlightRecorderStage turns the map-op flight recorder's records into
// partners: the goroutines its probes saw on the crashing map, with their
// op, their call site and how long before the fatal error they were there.
// It runs after MapStage (it needs the map's address), while the process
// is held; PartnersStage.Finish, after the release, merges the partners
// found without probes with these by goroutine.
type FlightRecorderStage struct {
	// Rec is nil when the flight recorder is not loaded: only OnMapCrash.
	Rec FlightRecorder
	// OnMapCrash, if set, is called after the release for every map fatal
	// error with the binary's probe id (mapops.mode on-crash arms it).
	OnMapCrash func(binID uint32)
}

func (FlightRecorderStage) Name() string { return "flight_recorder" }

// maxTasks bounds the threads whose last map op is looked up.
const maxTasks = 4096

func (s FlightRecorderStage) Capture(ctx context.Context, t *Target, c *report.Crash) error {
	if s.Rec == nil || !strings.HasPrefix(string(c.Fatal.Kind), "map_") || len(t.Events) == 0 {
		return nil
	}
	pid := uint32(t.ID.PID)
	crasher := mapEvent(t.Events, c)
	goid := goidReader(t)
	addr := uint64(0)
	if c.Map != nil {
		addr = c.Map.Addr
	}
	var ops []bpf.MapOp
	if addr != 0 {
		var err error
		if ops, err = s.Rec.Writers(pid, addr); err != nil {
			return err
		}
	}
	own, ownOK, err := s.ownOp(pid, crasher, c.Fatal.Kind, addr, ops)
	if err != nil {
		return err
	}
	ownOK = ownOK && own.Pid == pid && own.Ktime <= crasher.Ktime && (crasher.Goid < 0 || goid(own.G) == crasher.Goid)
	switch {
	case ownOK && addr == 0:
		if c.Map == nil {
			c.Map = &report.Map{}
		}
		c.Map.Addr, addr = own.Map, own.Map
		c.Map.FoundBy = "flight recorder: last map op of the crashing thread"
		c.Map.Op = bpf.OpName(own.Op)
		if ops, err = s.Rec.Writers(pid, addr); err != nil {
			return err
		}
	case ownOK && own.Map != addr:
		c.Capture.Errors = append(c.Capture.Errors, fmt.Sprintf(
			"flight recorder: the crashing thread's last map op was on %#x, the frame walk found %#x", own.Map, addr))
	}
	if addr == 0 {
		return nil
	}
	addPartners(t, c, crasher, append(ops, s.threadOps(ctx, t, pid, addr)...), goid)
	return nil
}

// ownOp is the crashing thread's own last op, which names the map with
// certainty: the fatal error is raised inside that call. A writer's is in
// the rings, a reader's or iterator's in the thread records.
func (s FlightRecorderStage) ownOp(pid uint32, crasher *bpf.Event, kind report.Kind, addr uint64, ops []bpf.MapOp) (bpf.MapOp, bool, error) {
	switch {
	case kind != report.KindMapConcurrentWrite && kind != report.KindMapCorrupted:
		// A read or an iteration: the thread records. (Growth, where a
		// corrupted map is found, runs inside writes.)
		return s.Rec.ThreadOp(crasher.Tid)
	case addr != 0:
		var own bpf.MapOp
		ok := false
		for _, op := range ops {
			if op.Tid == crasher.Tid && op.Ktime > own.Ktime {
				own, ok = op, true
			}
		}
		return own, ok, nil
	default: // map not found by the frame walk: scan every ring
		return s.Rec.ThreadWrite(pid, crasher.Tid)
	}
}

// threadOps are the last reads and iterations of the process's threads on
// the map at addr.
func (s FlightRecorderStage) threadOps(ctx context.Context, t *Target, pid uint32, addr uint64) []bpf.MapOp {
	var ops []bpf.MapOp
	for _, tid := range tasks(t.ID.PID) {
		if ctx.Err() != nil {
			break
		}
		if op, ok, err := s.Rec.ThreadOp(uint32(tid)); err == nil && ok && op.Pid == pid && op.Map == addr {
			ops = append(ops, op)
		}
	}
	return ops
}

// addPartners merges the partners the records name into the report's.
func addPartners(t *Target, c *report.Crash, crasher *bpf.Event, ops []bpf.MapOp, goid func(uint64) int64) {
	recs := make([]record, len(ops))
	for i, op := range ops {
		recs[i] = record{MapOp: op, Goid: goid(op.G)}
	}
	var tab *symbolizer.Table
	if t.Binary != nil {
		tab = t.Binary.Table
	}
	mine := partnersFromRecords(recs, crasher.Goid, crasher.Tid, t.Events[0].Ktime, tab)
	before := len(c.Partners)
	c.Partners = mergePartners(c.Partners, mine)
	if before == 0 && len(c.Partners) > 0 {
		c.PartnersNote = ""
	}
	if len(mine) == 0 && len(c.Partners) == 0 && c.PartnersNote == "" {
		c.PartnersNote = "flight recorder: no other goroutine touched the map while armed"
	}
}

// Finish arms the binary for later processes (mapops.mode on-crash), after
// the release: attaching probes must not lengthen the freeze.
func (s FlightRecorderStage) Finish(t *Target, c *report.Crash) error {
	if s.OnMapCrash == nil || !strings.HasPrefix(string(c.Fatal.Kind), "map_") || len(t.Events) == 0 {
		return nil
	}
	s.OnMapCrash(uint32(t.Events[0].Cookie >> 32))
	return nil
}

// record is a flight-recorder record with the goid of its g.
type record struct {
	bpf.MapOp
	Goid int64 // -1: unknown
}

// goidReader reads g.goid from the frozen process (the probe records the g
// pointer, not the goid: one user memory read less per map operation). A g
// reused by a later goroutine would give that one's id: partners are
// goroutines alive at the crash, so this is the goid that matters.
func goidReader(t *Target) func(g uint64) int64 {
	off := int64(-1)
	if t.Binary != nil && t.Binary.Layout != nil {
		if o, err := t.Binary.Layout.G.Goid.Get("runtime.g.goid"); err == nil {
			off = int64(o)
		}
	}
	memo := map[uint64]int64{}
	return func(g uint64) int64 {
		if g == 0 || off < 0 || t.Mem == nil {
			return -1
		}
		if id, ok := memo[g]; ok {
			return id
		}
		var b [8]byte
		id := int64(-1)
		if _, err := t.Mem.ReadAt(b[:], g+uint64(off)); err == nil {
			id = int64(binary.LittleEndian.Uint64(b[:]))
		}
		memo[g] = id
		return id
	}
}

// tasks lists the thread ids of pid.
func tasks(pid int) []int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil && len(out) < maxTasks {
			out = append(out, tid)
		}
	}
	return out
}

// partnersFromRecords makes one partner per goroutine (or per thread when
// the goid is unknown) from its newest record, leaving out the crashing
// goroutine. firstFatal is the first fatal event's ktime.
func partnersFromRecords(recs []record, crasherGoid int64, crasherTID uint32, firstFatal uint64, tab *symbolizer.Table) []report.Partner {
	type who struct {
		goid int64
		tid  uint32
	}
	// Per goroutine its newest write, else its newest op: a goroutine that
	// wrote the map and then read it is the writer the error is about.
	newest := map[who]record{}
	for _, r := range recs {
		k := who{goid: r.Goid}
		if r.Goid < 0 {
			if r.Tid == crasherTID {
				continue
			}
			k.tid = r.Tid
		} else if r.Goid == crasherGoid {
			continue
		}
		old, ok := newest[k]
		w, oldW := r.Op <= bpf.MapOpClear, ok && old.Op <= bpf.MapOpClear
		if !ok || (w && !oldW) || (w == oldW && r.Ktime > old.Ktime) {
			newest[k] = r
		}
	}
	out := make([]report.Partner, 0, len(newest))
	for _, r := range newest {
		p := report.Partner{
			Goid: r.Goid, TID: int(r.Tid), Op: bpf.OpName(r.Op),
			Evidence: report.EvidenceFlightRecorder, Rank: report.EvidenceRank(report.EvidenceFlightRecorder),
			AgoNS: int64(firstFatal) - int64(r.Ktime),
		}
		if f, ok := callSiteOf(tab, r); ok {
			p.Function, p.File, p.Line, p.PC = f.Function, f.File, f.Line, f.PC
		}
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool {
		wi, wj := isWrite(out[i].Op), isWrite(out[j].Op)
		if wi != wj {
			return wi
		}
		return out[i].AgoNS < out[j].AgoNS
	})
	return out
}

func isWrite(op string) bool { return op == "assign" || op == "delete" || op == "clear" }

// callSiteOf symbolizes the user code that called into the map: the
// return address, or the caller's caller when the probed function was
// called by a runtime wrapper (Go 1.27's mapaccess1_X -> mapaccess2_X).
func callSiteOf(tab *symbolizer.Table, r record) (symbolizer.Frame, bool) {
	if tab == nil {
		return symbolizer.Frame{}, false
	}
	for _, pc := range []uint64{r.Caller, r.Caller2} {
		if pc == 0 {
			continue
		}
		frames := tab.PCToFrames(pc - 1)
		if len(frames) == 0 {
			continue
		}
		// Innermost first: with inlining, the innermost frame is the line
		// that called into the map.
		f := frames[0]
		if isRuntimeFunc(f.Function) {
			continue
		}
		f.PC = pc
		return f, true
	}
	return symbolizer.Frame{}, false
}

func isRuntimeFunc(name string) bool {
	return strings.HasPrefix(name, "runtime.") || strings.HasPrefix(name, "internal/runtime/")
}

// mergePartners merges the flight recorder's partners into those found
// without probes: one entry per goroutine, the strongest evidence kept and
// its gaps (call site, op, how long ago) filled from the other; then
// sorted strongest first, most recent first.
func mergePartners(have, mine []report.Partner) []report.Partner {
	out := append([]report.Partner{}, have...)
	idx := map[int64]int{}
	for i, p := range out {
		if p.Goid >= 0 {
			idx[p.Goid] = i
		}
	}
	for _, p := range mine {
		i, ok := idx[p.Goid]
		if !ok || p.Goid < 0 {
			out = append(out, p)
			continue
		}
		old := out[i]
		strong, weak := old, p
		if report.EvidenceRank(p.Evidence) < report.EvidenceRank(old.Evidence) {
			strong, weak = p, old
		}
		if strong.Function == "" {
			strong.Function, strong.File, strong.Line, strong.PC = weak.Function, weak.File, weak.Line, weak.PC
		}
		if strong.Op == "" {
			strong.Op = weak.Op
		}
		if strong.MapFunction == "" {
			strong.MapFunction = weak.MapFunction
		}
		if strong.TID == 0 {
			strong.TID = weak.TID
		}
		if p.AgoNS != 0 {
			strong.AgoNS = p.AgoNS
		}
		strong.Rank = report.EvidenceRank(strong.Evidence)
		out[i] = strong
	}
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := report.EvidenceRank(out[i].Evidence), report.EvidenceRank(out[j].Evidence)
		if ri != rj {
			return ri < rj
		}
		return false
	})
	for i := range out {
		out[i].Rank = report.EvidenceRank(out[i].Evidence)
	}
	return out
}
