package crashsite

import (
	"fmt"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/report"
)

// The allocation site of a map no variable names: the Go runtime's memory
// profiler keeps, for each sampled allocation (every one under
// GODEBUG=memprofilerate=1, else about one per 512 KiB allocated), a
// specialprofile record on the object's span whose bucket holds the
// allocating stack. The map header's record is found from its address:
// mheap_.arenas[l1][l2] -> heapArena.spans[page] -> mspan.specials, the
// entry of kind _KindSpecialProfile whose offset lies in the header's
// object (Go 1.22+ objects with a malloc header are profiled at base+8) ->
// bucket -> nstk return PCs. Offsets and constants are the binary's DWARF
// (goruntime.HeapOffsets). The chain is read while the process is held
// (copyAllocProfile, a few dependent batches) and walked again from that
// copy after the release (allocSite); memory from the process is hostile:
// every read, loop and allocation is bounded.

// Bounds of the walk.
const (
	maxSpecials    = 1024 // specials followed on one span
	maxAllocPCs    = 64   // PCs of the allocating stack read and kept
	maxBucketStack = 1024 // the runtime's own bound (debug.profstackdepth)
	// specialsWindow is how much is copied at a special not copied yet:
	// specials come from a fixalloc, neighbours in the list are mostly
	// neighbours in memory, so one copy serves many steps.
	specialsWindow = 4096
	// maxAllocRounds bounds the dependent copies while held: arena
	// index, heap arena slot, span, the specials windows, the bucket.
	maxAllocRounds = 16
)

// unsampledNote says why a map's allocation site is not known when the
// profiler did not sample it: the fix is in the note.
const unsampledNote = "allocation site unknown (not sampled by the runtime's memory profiler; " + everyAllocation + ")"

// everyAllocation says how to have every allocation sampled.
const everyAllocation = "GODEBUG=memprofilerate=1 samples every allocation from Go 1.20, runtime.MemProfileRate = 1 in an init function before"

// profMem reads memory for the walk: get returns n bytes at addr, or nil.
// window (≥ n) is how much to copy when the bytes are not copied yet;
// only the held phase copies.
type profMem interface {
	get(addr, n, window uint64) []byte
}

// copyProfMem reads through the diagnosis copy while the process is held,
// copying what is missing, one batch per call, at most maxAllocRounds.
type copyProfMem struct {
	cp     *copier
	rounds int
}

func (m *copyProfMem) get(addr, n, window uint64) []byte {
	if b := m.cp.sink.view(addr, n); uint64(len(b)) >= n {
		return b[:n]
	}
	if m.rounds >= maxAllocRounds || m.cp.ctx.Err() != nil {
		return nil
	}
	m.rounds++
	m.cp.sink.fetch([]Range{{Addr: addr, Size: max(n, window)}}, true)
	if b := m.cp.sink.view(addr, n); uint64(len(b)) >= n {
		return b[:n]
	}
	return nil
}

// readProfMem reads the copy after the release.
type readProfMem struct{ m Memory }

func (r readProfMem) get(addr, n, _ uint64) []byte {
	if n == 0 || n > 1<<20 || addr+n < addr {
		return nil
	}
	b := make([]byte, n)
	if _, err := r.m.ReadAt(b, addr); err != nil {
		return nil
	}
	return b
}

// copyAllocProfile copies, while held, what allocSite reads: the chain
// from mheap_ to the map header's profile bucket and its stack. What it
// could not copy the walk after the release reports.
func (cp *copier) copyAllocProfile() {
	h := cp.plan.Heap
	if h == nil || cp.plan.MapAddr == 0 {
		return
	}
	m := &copyProfMem{cp: cp}
	if _, note := walkAllocProfile(h, h.MHeap+cp.plan.Bias, cp.plan.MapAddr, m); note == unsampledNote && h.MemProfileRate != 0 {
		m.get(h.MemProfileRate+cp.plan.Bias, 8, 8) // why not sampled
	}
}

// unsampledWhy refines unsampledNote with the process's
// runtime.MemProfileRate, when it was copied: 0 means profiling was off
// for the whole process (the runtime zeroes it when the binary does not
// link the memory profiler), so the GODEBUG hint alone would not help.
func unsampledWhy(h *goruntime.HeapOffsets, bias uint64, m profMem) string {
	if h.MemProfileRate == 0 {
		return unsampledNote
	}
	b := m.get(h.MemProfileRate+bias, 8, 8)
	if b == nil {
		return unsampledNote
	}
	switch rate := int64(le.Uint64(b)); {
	case rate == 0:
		return "allocation site unknown (memory profiling is off in this process: runtime.MemProfileRate is 0, which the runtime sets when the binary does not link the memory profiler; link it (import net/http/pprof or runtime/pprof; reach runtime.MemProfile) and " + everyAllocation + ")"
	case rate > 1:
		return fmt.Sprintf("allocation site unknown (not sampled by the runtime's memory profiler, which samples about one allocation per %d bytes; %s)", rate, everyAllocation)
	}
	return unsampledNote
}

// walkAllocProfile returns the allocating stack (return PCs) of the heap
// object holding p, from the memory profiler's record, or a note saying
// why there is none: not sampled, or what was unreadable or malformed.
func walkAllocProfile(h *goruntime.HeapOffsets, mheap, p uint64, m profMem) ([]uint64, string) {
	word := func(addr uint64) (uint64, bool) {
		b := m.get(addr, 8, 8)
		if b == nil {
			return 0, false
		}
		return le.Uint64(b), true
	}
	if !heapLayoutOK(h) {
		return nil, "allocation site: heap layout incomplete"
	}
	// arenaIndex, l1() and l2() of runtime/mheap.go (uintptr arithmetic).
	ai := (p - h.ArenaBase) / h.HeapArenaBytes
	l1, l2 := uint64(0), ai
	if h.L1 > 1 {
		l1, l2 = ai>>h.L1Shift, ai&(h.L2-1)
	}
	if l1 >= h.L1 || l2 >= h.L2 {
		return nil, fmt.Sprintf("allocation site: map address %#x outside the heap arena index", p)
	}
	l2arr, ok := word(mheap + uint64(h.Arenas) + 8*l1)
	if !ok || l2arr == 0 {
		return nil, fmt.Sprintf("allocation site: heap arena map of %#x not readable or empty", p)
	}
	ha, ok := word(l2arr + 8*l2)
	if !ok || ha == 0 {
		return nil, fmt.Sprintf("allocation site: no heap arena holds %#x (not a heap object?)", p)
	}
	span, ok := word(ha + uint64(h.Spans) + 8*((p/h.PageSize)%h.PagesPerArena))
	if !ok || span == 0 {
		return nil, fmt.Sprintf("allocation site: no span holds %#x", p)
	}
	sb := m.get(span, h.SpanSize, h.SpanSize)
	if sb == nil {
		return nil, fmt.Sprintf("allocation site: span at %#x not readable", span)
	}
	start, elem, limit := le.Uint64(sb[h.SpanStartAddr:]), le.Uint64(sb[h.SpanElemSize:]), le.Uint64(sb[h.SpanLimit:])
	state, specials := uint64(sb[h.SpanState]), le.Uint64(sb[h.SpanSpecials:])
	if state != h.SpanInUse || elem == 0 || p < start || p >= limit || elem > limit-start {
		return nil, fmt.Sprintf("allocation site: span at %#x malformed for %#x (state %d, start %#x, elemsize %d, limit %#x)", span, p, state, start, elem, limit)
	}
	lo := (p - start) / elem * elem // the object's offset in its span
	hi := lo + elem
	bucket, note := findProfileSpecial(h, m, specials, lo, hi)
	if bucket == 0 {
		return nil, note
	}
	return bucketStack(h, m, bucket)
}

// findProfileSpecial follows a span's specials (sorted by offset, then
// kind) to the profile record of the object at [lo, hi) and returns its
// bucket, or 0 and a note.
func findProfileSpecial(h *goruntime.HeapOffsets, m profMem, s, lo, hi uint64) (uint64, string) {
	seen := map[uint64]bool{}
	for i := 0; s != 0; i++ {
		if i >= maxSpecials {
			return 0, fmt.Sprintf("allocation site: span's specials list longer than %d entries", maxSpecials)
		}
		if seen[s] {
			return 0, fmt.Sprintf("allocation site: span's specials list malformed (a cycle at %#x)", s)
		}
		seen[s] = true
		b := m.get(s, h.ProfileSize, specialsWindow)
		if b == nil {
			return 0, fmt.Sprintf("allocation site: special at %#x not copied while held (%d entries followed)", s, i)
		}
		var off uint64
		switch o := b[h.SpecialOffset:]; h.SpecialOffsetSize {
		case 2:
			off = uint64(le.Uint16(o))
		case 4:
			off = uint64(le.Uint32(o))
		default:
			off = le.Uint64(o)
		}
		if off >= hi {
			break // sorted: nothing for this object
		}
		if off >= lo && uint64(b[h.SpecialKind]) == h.KindProfile {
			bucket := le.Uint64(b[h.ProfileBucket:])
			if bucket == 0 {
				return 0, "allocation site: the map's profile record has no bucket"
			}
			return bucket, ""
		}
		s = le.Uint64(b[h.SpecialNext:])
	}
	return 0, unsampledNote
}

// bucketStack reads a profile bucket's stack: nstk return PCs after its
// header, at most maxAllocPCs of them.
func bucketStack(h *goruntime.HeapOffsets, m profMem, bucket uint64) ([]uint64, string) {
	hdr := m.get(bucket, h.BucketSize, h.BucketSize+8*maxAllocPCs)
	if hdr == nil {
		return nil, fmt.Sprintf("allocation site: profile bucket at %#x not readable", bucket)
	}
	nstk := le.Uint64(hdr[h.BucketNStk:])
	if nstk == 0 || nstk > maxBucketStack {
		return nil, fmt.Sprintf("allocation site: profile bucket at %#x malformed (nstk %d)", bucket, nstk)
	}
	n := min(nstk, maxAllocPCs)
	b := m.get(bucket+h.BucketSize, 8*n, 8*n)
	if b == nil {
		return nil, fmt.Sprintf("allocation site: profile bucket's stack at %#x not readable", bucket+h.BucketSize)
	}
	pcs := make([]uint64, 0, n)
	for i := uint64(0); i < n; i++ {
		pcs = append(pcs, le.Uint64(b[8*i:]))
	}
	return pcs, ""
}

// allocSite fills v's allocation site and stack from the copy: the first
// frame outside the runtime (make's caller), with the stack it was
// called on. Notes say why not.
func allocSite(in DiagnoseInput, v *report.Variable, out *Diagnosis) {
	if in.Heap == nil {
		why := in.HeapNote
		if why == "" {
			why = "the runtime heap layout was not read from DWARF"
		}
		v.AllocNote = "allocation site not looked at: " + why
		out.Notes = append(out.Notes, v.AllocNote)
		return
	}
	pcs, note := walkAllocProfile(in.Heap, in.Heap.MHeap+in.Bias, in.MapAddr, readProfMem{in.Mem})
	if note == unsampledNote {
		note = unsampledWhy(in.Heap, in.Bias, readProfMem{in.Mem})
	}
	if len(pcs) == 0 {
		v.AllocNote = note
		out.Notes = append(out.Notes, note)
		return
	}
	// Each PC is a return address, one per logical frame: the runtime
	// expands inlined calls itself (runtime.Callers semantics), so only
	// the innermost frame at pc-1 is this PC's.
	for _, pc := range pcs {
		if pc == 0 {
			break
		}
		f := report.Site{Function: "?"}
		if frs := in.Table.PCToFrames(pc - 1); len(frs) > 0 {
			f = report.Site{Function: frs[0].Function, File: frs[0].File, Line: frs[0].Line}
		}
		v.AllocStack = append(v.AllocStack, f)
		if v.AllocSite == nil && f.Function != "?" && !isRuntime(f.Function) {
			site := f
			v.AllocSite = &site
		}
	}
	if v.AllocSite == nil {
		v.AllocNote = "allocation site: the profiled stack has no frame outside the runtime"
		out.Notes = append(out.Notes, v.AllocNote)
	}
}

// heapLayoutOK reports whether h's sizes hold its offsets: a layout read
// from a malformed binary must not index past what the walk reads.
func heapLayoutOK(h *goruntime.HeapOffsets) bool {
	if h.HeapArenaBytes == 0 || h.L1 == 0 || h.L2 == 0 || h.PageSize == 0 || h.PagesPerArena == 0 ||
		h.SpanSize > 4096 || h.ProfileSize > 4096 || h.BucketSize > 4096 {
		return false
	}
	in := func(o goruntime.Offset, n, size uint64) bool { return o.Known() && uint64(o)+n <= size }
	return in(h.SpanStartAddr, 8, h.SpanSize) && in(h.SpanElemSize, 8, h.SpanSize) && in(h.SpanLimit, 8, h.SpanSize) &&
		in(h.SpanState, 1, h.SpanSize) && in(h.SpanSpecials, 8, h.SpanSize) &&
		in(h.SpecialNext, 8, h.ProfileSize) && in(h.SpecialOffset, h.SpecialOffsetSize, h.ProfileSize) &&
		in(h.SpecialKind, 1, h.ProfileSize) && in(h.ProfileBucket, 8, h.ProfileSize) &&
		in(h.BucketNStk, 8, h.BucketSize) && h.Arenas.Known() && h.Spans.Known()
}
