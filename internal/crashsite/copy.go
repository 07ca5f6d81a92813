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

// covered reports whether [addr, addr+n) was copied.
func (c *Copy) covered(addr, n uint64) bool {
	var b [1]byte
	if n == 0 {
		return false
	}
	_, err1 := c.ReadAt(b[:], addr)
	_, err2 := c.ReadAt(b[:], addr+n-1)
	return err1 == nil && err2 == nil
}

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

// CopyForDiagnosis copies what the diagnosis reads: every goroutine's
// stack, the data sections, and the heap objects reachable from the roots
// and the stacks within a few pointers (closure contexts, structs a
// variable points to, a sync.Map's nodes). Bounded in bytes, objects and
// depth, and by ctx; notes say what was cut.
func CopyForDiagnosis(ctx context.Context, mem Memory, plan CopyPlan) (*Copy, []string) {
	cp := &copier{ctx: ctx, mem: mem, plan: plan, c: &Copy{}}
	cp.copyStacks()
	cp.copyGlobals()
	if plan.MapAddr != 0 {
		cp.copyHeap()
	}
	return cp.c, cp.notes
}

// copier is one CopyForDiagnosis: what it reads from, what it has copied,
// and what it had to cut. seen is shared by every level of the heap walk so
// that each object is queued once however many pointers lead to it.
type copier struct {
	ctx   context.Context
	mem   Memory
	plan  CopyPlan
	c     *Copy
	notes []string
	seen  map[uint64]bool
}

// copyStacks copies each goroutine's stack from SP up: the frames the
// holder search and the naming walk. Bounded per goroutine and in total.
func (cp *copier) copyStacks() {
	total := 0
	for _, s := range cp.plan.Stacks {
		if cp.ctx.Err() != nil {
			cp.notes = append(cp.notes, "copy: stacks cut by the deadline")
			break
		}
		n := s.copyBytes()
		if total+int(n) > copyStacksTotal {
			cp.notes = append(cp.notes, fmt.Sprintf("copy: stacks cut at %d bytes", copyStacksTotal))
			break
		}
		buf := make([]byte, n&^7)
		if len(buf) == 0 || s.SP == 0 {
			continue
		}
		if _, err := cp.mem.ReadAt(buf, s.SP&^7); err != nil {
			continue
		}
		total += len(buf)
		cp.c.add(s.SP&^7, buf)
	}
}

// copyGlobals copies the data sections whole: the global holder search
// reads every word of them. Bounded in total.
func (cp *copier) copyGlobals() {
	total := 0
	for _, g := range cp.plan.Globals {
		n := g.Size &^ 7
		if total+int(n) > copyGlobalsTotal {
			cp.notes = append(cp.notes, fmt.Sprintf("copy: data sections cut at %d bytes", copyGlobalsTotal))
			break
		}
		buf := make([]byte, n)
		if _, err := cp.mem.ReadAt(buf, g.Addr); err != nil {
			cp.notes = append(cp.notes, fmt.Sprintf("copy: data section at %#x: %v", g.Addr, err))
			continue
		}
		total += len(buf)
		cp.c.add(g.Addr, buf)
	}
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
	buf := make([]byte, r.Size&^7)
	if _, err := cp.c.ReadAt(buf, r.Addr); err != nil {
		return level
	}
	return cp.pointersOf(buf, level)
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

// followHeap copies the first copyObjectBytes of each object of level and
// queues what they point to, up to copyMaxDepth levels; it stops, saying
// where, at the object, byte or ctx budget.
func (cp *copier) followHeap(level []uint64) {
	objects, bytes := 0, 0
	for depth := 0; depth < copyMaxDepth && len(level) > 0; depth++ {
		var next []uint64
		for _, a := range level {
			if cp.ctx.Err() != nil || objects >= copyMaxObjects || bytes >= copyObjectsTotal {
				cp.notes = append(cp.notes, fmt.Sprintf("copy: heap objects cut at %d objects, %d bytes, depth %d", objects, bytes, depth))
				return
			}
			if cp.c.covered(a, copyObjectBytes) {
				continue
			}
			buf := cp.readGuess(a)
			if buf == nil {
				continue
			}
			objects++
			bytes += len(buf)
			cp.c.add(a, buf)
			next = cp.pointersOf(buf, next)
		}
		level = next
	}
}

// readGuess reads up to copyObjectBytes of the object a word may point
// to; nil when nothing is there. Memory that can tell (a
// symbolizer.MappedReader such as procmem.Copy) reads a guess into no
// mapping without a system call and without counting it as a miss: the
// walk follows every pointer-shaped word, and most are not pointers.
func (cp *copier) readGuess(a uint64) []byte {
	buf := make([]byte, copyObjectBytes)
	if m, ok := cp.mem.(symbolizer.MappedReader); ok {
		n, err := m.ReadMapped(buf, a)
		if err != nil || n < 8 {
			return nil
		}
		return buf[:n&^7]
	}
	if _, err := cp.mem.ReadAt(buf, a); err != nil {
		return nil
	}
	return buf
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
