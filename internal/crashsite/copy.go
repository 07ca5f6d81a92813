package crashsite

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// Stack is where a goroutine's frames start (its thread's registers when
// it runs, g.sched when not) and its stack's bounds, read while the
// process is held so that the diagnosis can walk it afterwards from a copy.
type Stack struct {
	Goid    int64  `json:"goid"`
	Status  uint32 `json:"status"`
	TID     int    `json:"tid,omitempty"`
	PC      uint64 `json:"pc"`
	SP      uint64 `json:"sp"`
	BP      uint64 `json:"bp"`
	Hi      uint64 `json:"hi"`
	StartPC uint64 `json:"start_pc"`
}

// copyBytes is how much of s is copied while the process is held, and so
// all that the diagnosis can search: from SP up to the stack's top, at most
// copyStackBytes (the process stays held while the copy runs).
func (s Stack) copyBytes() uint64 {
	n := uint64(copyStackBytes)
	if s.Hi > s.SP && s.Hi-s.SP < n {
		n = s.Hi - s.SP
	}
	return n
}

// Stacks returns the resume point of every live goroutine that has one.
func Stacks(mem Memory, tab Symbols, l *goruntime.Layout, gs []symbolizer.RawGoroutine, threads map[int]symbolizer.Registers) []Stack {
	out := make([]Stack, 0, len(gs))
	var b [8]byte
	for i := range gs {
		g := &gs[i]
		st := g.Status &^ goruntime.GScan
		if g.ID <= 0 || st == goruntime.GDead || st == goruntime.GIdle {
			continue
		}
		pc, sp, bp, ok := resumeAt(mem, tab, l, threads, g)
		if !ok {
			continue
		}
		s := Stack{Goid: g.ID, Status: g.Status, TID: g.TID, PC: pc, SP: sp, BP: bp, StartPC: g.StartPC}
		if l.G.StackHi.Known() && g.Addr != 0 {
			if _, err := mem.ReadAt(b[:], g.Addr+uint64(l.G.StackHi)); err == nil {
				s.Hi = binary.LittleEndian.Uint64(b[:])
			}
		}
		out = append(out, s)
	}
	return out
}

// Copy is memory copied from a held process: the regions the diagnosis
// reads after the release, behind the same ReadAt as the live process. A
// read outside every region fails.
type Copy struct {
	regions []region // sorted by addr, not overlapping
	bytes   int64
}

type region struct {
	addr uint64
	data []byte
}

// ErrNotCopied: the address was not copied while the process was held.
var ErrNotCopied = errors.New("not copied while held")

// ReadAt reads p at addr from the copied regions.
func (c *Copy) ReadAt(p []byte, addr uint64) (int, error) {
	i := sort.Search(len(c.regions), func(i int) bool { return c.regions[i].addr+uint64(len(c.regions[i].data)) > addr })
	if i < len(c.regions) {
		r := c.regions[i]
		if addr >= r.addr && addr+uint64(len(p)) <= r.addr+uint64(len(r.data)) {
			return copy(p, r.data[addr-r.addr:]), nil
		}
	}
	return 0, fmt.Errorf("read %d bytes at %#x: %w", len(p), addr, ErrNotCopied)
}

// Bytes is how much was copied.
func (c *Copy) Bytes() int64 { return c.bytes }

// add inserts a region, merging it with those it overlaps or touches.
func (c *Copy) add(addr uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	c.bytes += int64(len(data))
	end := addr + uint64(len(data))
	i := sort.Search(len(c.regions), func(i int) bool { return c.regions[i].addr+uint64(len(c.regions[i].data)) >= addr })
	j := i
	for j < len(c.regions) && c.regions[j].addr <= end {
		j++
	}
	if i == j {
		c.regions = append(c.regions, region{})
		copy(c.regions[i+1:], c.regions[i:])
		c.regions[i] = region{addr: addr, data: data}
		return
	}
	lo, hi := addr, end
	if a := c.regions[i].addr; a < lo {
		lo = a
	}
	if e := c.regions[j-1].addr + uint64(len(c.regions[j-1].data)); e > hi {
		hi = e
	}
	merged := make([]byte, hi-lo)
	for _, r := range c.regions[i:j] {
		copy(merged[r.addr-lo:], r.data)
	}
	copy(merged[addr-lo:], data)
	c.regions[i] = region{addr: lo, data: merged}
	c.regions = append(c.regions[:i+1], c.regions[j:]...)
}

// CopyPlan says what to copy while the process is held.
type CopyPlan struct {
	// Stacks: each from SP up to its top (bounded by StackBytes).
	Stacks []Stack
	// Globals are the binary's pointer-holding data sections (.data,
	// .bss), at run-time addresses; copied whole (bounded).
	Globals []Range
	// Roots are the ranges whose pointers are followed (package-level
	// variables outside the runtime); nil: every word of Globals.
	Roots []Range
	// MapAddr is the crashing map: objects are followed only within the
	// heap around it.
	MapAddr uint64
	// Heap (DWARF only) has the chain from runtime.mheap_ to the map
	// header's memory-profile record copied, for its allocation site;
	// Bias is the PIE load bias of mheap_'s link address.
	Heap *goruntime.HeapOffsets
	Bias uint64
}

// Range is [Addr, Addr+Size).
type Range struct {
	Addr, Size uint64
}

// Bounds of the copy: the process is held while it runs.
const (
	copyStackBytes   = 64 << 10 // per goroutine, from SP up
	copyStacksTotal  = 16 << 20
	copyGlobalsTotal = 8 << 20
	copyObjectBytes  = 256
	copyMaxObjects   = 8192
	copyMaxDepth     = 5
	copyObjectsTotal = 4 << 20
	// heapWindow: a word is followed when it lies this close to the map:
	// Go's heap arenas grow contiguously from one (randomized since Go
	// 1.26) base, so the map's neighbourhood is the heap.
	heapWindow = 64 << 30
)

// Batch is memory that copies many ranges per system call and keeps what
// it copied (procmem.Copy): Want queues a range, WantInMapping one cut
// short where its mapping ends (a guess into no mapping queues nothing
// and is no miss), Flush copies everything queued, ViewUpTo hands copied
// bytes out in place.
type Batch interface {
	Memory
	Want(addr, n uint64)
	WantInMapping(addr, n uint64)
	Flush() error
	ViewUpTo(addr, n uint64) []byte
}

// CopyForDiagnosis copies what the diagnosis reads: every goroutine's
// stack, the data sections, and the heap objects reachable from the roots
// and the stacks within a few pointers (closure contexts, structs a
// variable points to, a sync.Map's nodes). Bounded in bytes, objects and
// depth, and by ctx; notes say what was cut.
//
// From a Batch it copies in a few batches — the stacks and sections in
// one, then one per level of the heap walk — into the Batch itself, and
// returns a nil Copy: the diagnosis then reads the Batch's image. From
// other memory it reads range by range into the returned Copy.
func CopyForDiagnosis(ctx context.Context, mem Memory, plan CopyPlan) (*Copy, []string) {
	cp := &copier{ctx: ctx, plan: plan}
	if b, ok := mem.(Batch); ok {
		cp.sink = batchSink{b}
	} else {
		own := &ownSink{mem: mem, c: &Copy{}}
		cp.sink, cp.own = own, own.c
	}
	cp.copyRoots()
	if plan.MapAddr != 0 {
		cp.copyHeap()
		cp.copyAllocProfile()
	}
	return cp.own, cp.notes
}

// sink is where a diagnosis copy goes.
type sink interface {
	// fetch copies rs; guesses are cut short where their mapping ends and
	// skipped when in none.
	fetch(rs []Range, guesses bool)
	// view returns the copied bytes from addr on (at most n), or nil.
	view(addr, n uint64) []byte
}

// batchSink copies into a Batch, one Flush per fetch.
type batchSink struct{ b Batch }

func (s batchSink) fetch(rs []Range, guesses bool) {
	for _, r := range rs {
		if guesses {
			s.b.WantInMapping(r.Addr, r.Size)
		} else {
			s.b.Want(r.Addr, r.Size)
		}
	}
	_ = s.b.Flush() // fails only when the process is gone: views then say what is missing
}

func (s batchSink) view(addr, n uint64) []byte { return s.b.ViewUpTo(addr, n) }

// ownSink reads range by range into its own Copy.
type ownSink struct {
	mem Memory
	c   *Copy
}

func (s *ownSink) fetch(rs []Range, guesses bool) {
	for _, r := range rs {
		buf := make([]byte, r.Size)
		n := len(buf)
		if m, ok := s.mem.(symbolizer.MappedReader); ok && guesses {
			k, err := m.ReadMapped(buf, r.Addr)
			if err != nil {
				continue
			}
			n = k
		} else if _, err := s.mem.ReadAt(buf, r.Addr); err != nil {
			continue
		}
		s.c.add(r.Addr, buf[:n])
	}
}

func (s *ownSink) view(addr, n uint64) []byte {
	buf := make([]byte, n)
	if _, err := s.c.ReadAt(buf, addr); err != nil {
		return nil
	}
	return buf
}

// copier is one CopyForDiagnosis: where it copies to, the ranges it
// copied as roots (stacks and sections, whose words are scanned whole),
// and what it had to cut. seen is shared by every level of the heap walk
// so that each object is queued once however many pointers lead to it.
type copier struct {
	ctx   context.Context
	plan  CopyPlan
	sink  sink
	own   *Copy // the ownSink's copy, nil for a Batch
	roots []Range
	notes []string
	seen  map[uint64]bool
}

// copyRoots copies, in one batch, each goroutine's stack from SP up (the
// frames the holder search and the naming walk read; bounded per
// goroutine and in total) and the data sections whole (the global holder
// search reads every word of them; bounded in total).
func (cp *copier) copyRoots() {
	var rs []Range
	total := 0
	for _, s := range cp.plan.Stacks {
		if cp.ctx.Err() != nil {
			cp.notes = append(cp.notes, "copy: stacks cut by the deadline")
			break
		}
		n := s.copyBytes() &^ 7
		if total+int(n) > copyStacksTotal {
			cp.notes = append(cp.notes, fmt.Sprintf("copy: stacks cut at %d bytes", copyStacksTotal))
			break
		}
		if n == 0 || s.SP == 0 {
			continue
		}
		total += int(n)
		rs = append(rs, Range{Addr: s.SP &^ 7, Size: n})
	}
	total = 0
	for _, g := range cp.plan.Globals {
		n := g.Size &^ 7
		if total+int(n) > copyGlobalsTotal {
			cp.notes = append(cp.notes, fmt.Sprintf("copy: data sections cut at %d bytes", copyGlobalsTotal))
			break
		}
		total += int(n)
		rs = append(rs, Range{Addr: g.Addr, Size: n})
	}
	cp.sink.fetch(rs, false)
	for _, g := range cp.plan.Globals {
		if got := cp.walk(Range{Addr: g.Addr, Size: g.Size &^ 7}, nil); got < g.Size&^7 {
			cp.notes = append(cp.notes, fmt.Sprintf("copy: data section at %#x: %d of %d bytes copied", g.Addr, got, g.Size&^7))
		}
	}
	cp.roots = sortedRanges(rs)
}

// walk calls fn (when not nil) with the copied bytes of r from its start,
// chunk by chunk across the copied ranges they lie in, and returns how
// many were copied before the first gap.
func (cp *copier) walk(r Range, fn func(addr uint64, b []byte)) uint64 {
	done := uint64(0)
	for done < r.Size {
		b := cp.sink.view(r.Addr+done, r.Size-done)
		if len(b) == 0 {
			break
		}
		if fn != nil {
			fn(r.Addr+done, b)
		}
		done += uint64(len(b))
	}
	return done
}

// sortedRanges sorts rs by address.
func sortedRanges(rs []Range) []Range {
	out := append([]Range(nil), rs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// inRoots reports whether [a, a+n) lies in one root range: its words were
// scanned already.
func (cp *copier) inRoots(a, n uint64) bool {
	i := sort.Search(len(cp.roots), func(i int) bool { return cp.roots[i].Addr > a })
	for j := i - 1; j >= 0 && j >= i-4; j-- { // ranges may overlap a little
		if r := cp.roots[j]; a >= r.Addr && a+n <= r.Addr+r.Size {
			return true
		}
	}
	return false
}

// copyHeap copies the heap objects near the map that the roots and the
// stacks point to, breadth first: a sync.Map's value sits a few pointers
// below its global, a closure's captured map one below a frame. The first
// level is read from what is already copied.
func (cp *copier) copyHeap() {
	cp.seen = map[uint64]bool{}
	var level []uint64
	roots := cp.plan.Roots
	if roots == nil {
		roots = cp.plan.Globals
	}
	for _, r := range roots {
		level = cp.pointersIn(r, level)
	}
	for _, s := range cp.plan.Stacks {
		level = cp.pointersIn(Range{Addr: s.SP &^ 7, Size: s.copyBytes()}, level)
	}
	cp.followHeap(level)
}

// pointersIn appends to level the words of the copied range r that point
// near the map and were not queued before; r not copied adds nothing.
func (cp *copier) pointersIn(r Range, level []uint64) []uint64 {
	var carry []byte // a word split across two copied ranges
	cp.walk(Range{Addr: r.Addr, Size: r.Size &^ 7}, func(addr uint64, b []byte) {
		if len(carry) > 0 {
			k := min(8-len(carry), len(b))
			carry = append(carry, b[:k]...)
			b = b[k:]
			if len(carry) == 8 {
				level = cp.pointersOf(carry, level)
				carry = carry[:0]
			}
		}
		whole := len(b) &^ 7
		level = cp.pointersOf(b[:whole], level)
		carry = append(carry, b[whole:]...)
	})
	return level
}

// pointersOf appends to level the words of buf that point near the map and
// were not queued before.
func (cp *copier) pointersOf(buf []byte, level []uint64) []uint64 {
	for off := 0; off+8 <= len(buf); off += 8 {
		if w := binary.LittleEndian.Uint64(buf[off:]); nearMap(w, cp.plan.MapAddr) && !cp.seen[w] {
			cp.seen[w] = true
			level = append(level, w)
		}
	}
	return level
}

// followHeap copies the first copyObjectBytes of each object of level —
// all of a level in one batch — and queues what they point to, up to
// copyMaxDepth levels; it stops, saying where, at the object, byte or ctx
// budget. An object inside a root range is not copied again nor scanned.
func (cp *copier) followHeap(level []uint64) {
	objects, bytes := 0, 0
	for depth := 0; depth < copyMaxDepth && len(level) > 0; depth++ {
		if cp.ctx.Err() != nil {
			cp.notes = append(cp.notes, fmt.Sprintf("copy: heap walk cut by the deadline at depth %d", depth))
			return
		}
		batch := make([]Range, 0, len(level))
		cut := false
		for _, a := range level {
			if objects >= copyMaxObjects || bytes >= copyObjectsTotal {
				cut = true
				break
			}
			if cp.inRoots(a, copyObjectBytes) {
				continue
			}
			objects++
			bytes += copyObjectBytes
			batch = append(batch, Range{Addr: a, Size: copyObjectBytes})
		}
		cp.sink.fetch(batch, true)
		var next []uint64
		for _, r := range batch {
			if buf := cp.sink.view(r.Addr, r.Size); len(buf) >= 8 {
				next = cp.pointersOf(buf[:len(buf)&^7], next)
			}
		}
		if cut {
			cp.notes = append(cp.notes, fmt.Sprintf("copy: heap objects cut at %d objects, %d bytes, depth %d", objects, bytes, depth))
			return
		}
		level = next
	}
}

// minUserAddr is the lowest address a user mapping can have (the
// kernel's default vm.mmap_min_addr): words below it are small integers.
const minUserAddr = 1 << 16

// nearMap reports whether w may point into the heap around the map m (an
// aligned word within heapWindow of it): the only pointers the copy and the
// sync.Map search follow.
func nearMap(w, m uint64) bool {
	d := w - m
	if w < m {
		d = m - w
	}
	return w%8 == 0 && w >= minUserAddr && d < heapWindow
}
