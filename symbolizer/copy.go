package symbolizer

import (
	"encoding/binary"
	"time"

	"github.com/mapsentry/mapsentry/goruntime"
)

// Copier is memory that copies many ranges at once while the process is
// held (procmem.Copy): Want queues a range, Flush copies every queued
// range in as few system calls as it can, View hands out copied bytes in
// place, and ReadAt copies through.
type Copier interface {
	MemReader
	Want(addr, n uint64)
	Flush() error
	View(addr, n uint64) ([]byte, bool)
}

// sigStackBytes is how much of a signal stack is copied above a thread's
// SP: SignalContext reads page by page up to this far for the kernel's
// signal frame (the copy stops where the mapping does).
const sigStackBytes = sigScanBytes + 4096

// wantAboveSP queues sigStackBytes above a thread's SP, up to the end of
// its mapping when the copier can tell (procmem.Copy.WantInMapping): a
// thread on the main thread's stack is often less than that below its
// top, and what lies beyond is not memory the copy missed.
func wantAboveSP(mem Copier, sp uint64) {
	if m, ok := mem.(interface{ WantInMapping(addr, n uint64) }); ok {
		m.WantInMapping(sp&^7, sigStackBytes)
		return
	}
	mem.Want(sp&^7, sigStackBytes)
}

// CopyGoroutines copies, while the process is held, every byte Capture
// reads — runtime.allgs, each g, the m and p of each goroutine that has
// one, each stack from where its unwind starts to its top (at most
// MaxStackBytes), and the signal stack of a thread caught in a signal
// handler — in a few batches of many ranges each (allgs; the g's; the
// m's; the p's and the stacks). It unwinds and names nothing: until
// Analyse fills the returned Snapshot after the release, from the copy
// (and it is then what Capture returns on the held process), its
// Goroutines are the live g's as read, with no frames.
func CopyGoroutines(mem Copier, l *goruntime.Layout, regs map[int]Registers, opt CaptureOptions) (*Snapshot, error) {
	opt, gl, err := captureLayout("copy goroutines", l, opt)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{GoMinor: l.Version.Minor, Nanotime: opt.Nanotime, LoadBias: opt.LoadBias,
		pending: &pendingCapture{layout: l, regs: regs, opt: opt}}
	ptr, n, err := readAllgs(mem, opt)
	if err != nil {
		return nil, err
	}
	n = min(n, uint64(opt.MaxGoroutines))
	if n == 0 {
		return s, nil
	}
	c := &goroutineCopy{mem: mem, gl: gl, regs: regs, opt: opt, s: s}
	gptrs, ok, err := c.gPointers(ptr, n)
	if err != nil {
		return nil, err
	}
	if !ok {
		return s, nil // Analyse reports the unreadable array
	}
	if err := c.copy(gptrs); err != nil {
		return nil, err
	}
	return s, nil
}

// goroutineCopy is one CopyGoroutines: the copier, the layout it decodes
// the copied g's and m's with (only to learn what to copy next), and the
// snapshot whose pending capture records what the freeze deadline cut.
type goroutineCopy struct {
	mem  Copier
	gl   *gLayout
	regs map[int]Registers
	opt  CaptureOptions
	s    *Snapshot
}

// liveG is a copied g that is not dead, at addr.
type liveG struct {
	addr uint64
	g    gFields
}

// gPointers copies allgs' n g pointers at ptr (n already bounded by
// MaxGoroutines); ok is false when the copy does not hold them.
func (c *goroutineCopy) gPointers(ptr, n uint64) (gptrs []byte, ok bool, err error) {
	c.mem.Want(ptr, n*8)
	if err := c.mem.Flush(); err != nil {
		return nil, false, err
	}
	gptrs, ok = c.mem.View(ptr, n*8)
	return gptrs, ok, nil
}

// copy copies, batch by batch, what each batch before it points to: the
// g's, then the m's of the live ones, then the p ids and the stacks. The
// freeze deadline is checked between batches; what it cuts off is
// recorded for Analyse, and what was copied is kept.
func (c *goroutineCopy) copy(gptrs []byte) error {
	if err := c.wantGs(gptrs); err != nil {
		return err
	}
	if c.late("the m's and stacks") {
		return nil
	}
	gs, ms, err := c.liveGs(gptrs)
	if err != nil {
		return err
	}
	if c.late("the stacks") {
		return nil
	}
	seenThreads := c.wantStacks(gs, c.readMs(ms))
	c.wantThreadStacks(seenThreads)
	return c.mem.Flush()
}

// late reports whether the freeze deadline has passed, and if so records
// in the pending capture that it ended the copy before what.
func (c *goroutineCopy) late(what string) bool {
	if !c.opt.Deadline.IsZero() && time.Now().After(c.opt.Deadline) {
		c.s.pending.errs = append(c.s.pending.errs, "the freeze deadline ended the copy before "+what)
		c.s.pending.truncated = true
		return true
	}
	return false
}

// wantGs copies every non-nil g that gptrs lists.
func (c *goroutineCopy) wantGs(gptrs []byte) error {
	for i := 0; i+8 <= len(gptrs); i += 8 {
		if gp := binary.LittleEndian.Uint64(gptrs[i:]); gp != 0 {
			c.mem.Want(gp, uint64(c.gl.size))
		}
	}
	return c.mem.Flush()
}

// liveGs decodes the copied g's, keeps those that are not dead (Capture
// skips the dead ones too), and copies the m of each that has one, once
// per m. A g the copy does not hold is skipped: Analyse reports it.
func (c *goroutineCopy) liveGs(gptrs []byte) ([]liveG, map[uint64]bool, error) {
	gs := make([]liveG, 0, len(gptrs)/8)
	ms := make(map[uint64]bool)
	for i := 0; i+8 <= len(gptrs); i += 8 {
		gp := binary.LittleEndian.Uint64(gptrs[i:])
		b, ok := c.mem.View(gp, uint64(c.gl.size))
		if gp == 0 || !ok {
			continue
		}
		g := c.gl.decode(b)
		if g.status&^goruntime.GScan == goruntime.GDead {
			continue
		}
		gs = append(gs, liveG{gp, g})
		if g.m != 0 && !ms[g.m] {
			ms[g.m] = true
			c.mem.Want(g.m, uint64(c.gl.mSize))
		}
	}
	if err := c.mem.Flush(); err != nil {
		return nil, nil, err
	}
	return gs, ms, nil
}

// readMs decodes the copied m's (thread id and running goroutine) and
// queues the id of each one's p.
func (c *goroutineCopy) readMs(ms map[uint64]bool) map[uint64]mInfo {
	gl := c.gl
	mi := make(map[uint64]mInfo, len(ms))
	for m := range ms {
		b, ok := c.mem.View(m, uint64(gl.mSize))
		if !ok {
			continue
		}
		info := mInfo{tid: int(int64(binary.LittleEndian.Uint64(b[gl.mProcID:]))),
			curg: binary.LittleEndian.Uint64(b[gl.mCurg:])}
		if p := binary.LittleEndian.Uint64(b[gl.mP:]); p != 0 {
			c.mem.Want(p+uint64(goruntime.POffsetID), 4)
		}
		mi[m] = info
	}
	return mi
}

// wantStacks queues each live goroutine's stack from where its walk
// starts, and records the goroutine as read, without frames: what a
// stage that copies more while the process is held (the diagnosis) needs
// to know where stacks are; Analyse replaces it. It returns the threads
// whose running goroutine was found.
func (c *goroutineCopy) wantStacks(gs []liveG, mi map[uint64]mInfo) map[int]bool {
	seenThreads := make(map[int]bool)
	c.s.Goroutines = make([]RawGoroutine, 0, len(gs))
	for _, lg := range gs {
		g := &lg.g
		var tid int
		if info, ok := mi[g.m]; ok && g.m != 0 {
			tid = info.tid
			if info.curg == lg.addr && tid != 0 {
				seenThreads[tid] = true
			}
		}
		wantStack(c.mem, g, tid, c.regs, c.opt.MaxStackBytes)
		c.s.Goroutines = append(c.s.Goroutines, RawGoroutine{Addr: lg.addr, ID: g.goid, Status: g.status,
			WaitReason: g.waitreason, WaitSince: g.waitsince, ParentID: g.parent, GoPC: g.gopc, StartPC: g.startpc,
			LockedM: g.lockedm != 0, MID: -1, PID: -1, TID: tid})
	}
	return seenThreads
}

// wantThreadStacks queues the stack above SP of each thread whose m was
// not found: the crash site is located from a probed thread's registers,
// so its stack is copied even then.
func (c *goroutineCopy) wantThreadStacks(seenThreads map[int]bool) {
	for tid, r := range c.regs {
		if !seenThreads[tid] && r.SP != 0 {
			wantAboveSP(c.mem, r.SP)
		}
	}
}

// wantStack queues the part of g's stack that its unwind (and the partner
// search) reads: from a little below the SP it starts at up to the top,
// at most maxStack beyond the SP (the unwinder stops there itself). A
// goroutine running on a thread whose SP is off its stack (system or
// signal stack) gets its whole stack, since where the interrupted frame
// is becomes known only from the signal frame, and the signal stack too.
func wantStack(mem Copier, g *gFields, tid int, regs map[int]Registers, maxStack int) {
	lo, hi := g.stackLo, g.stackHi
	st := g.status &^ goruntime.GScan
	if st == goruntime.GIdle || hi <= lo || hi-lo > 1<<30 {
		return
	}
	from := func(sp uint64) {
		if sp < lo || sp >= hi {
			return
		}
		start := max(lo, (sp&^7)-16)
		end := min(hi, sp+uint64(maxStack)+stackChunk)
		mem.Want(start, end-start)
	}
	if st == goruntime.GRunning {
		if r, ok := regs[tid]; ok && tid != 0 {
			if r.SP >= lo && r.SP < hi {
				from(r.SP)
				return
			}
			wantAboveSP(mem, r.SP)
			mem.Want(max(lo, hi-min(hi-lo, uint64(maxStack)+stackChunk)), min(hi-lo, uint64(maxStack)+stackChunk))
		}
	}
	from(g.schedSP)
	if g.syscallSP != 0 && g.syscallSP != g.schedSP {
		from(g.syscallSP)
	}
}

// pendingCapture is what Analyse needs to read a copied capture.
type pendingCapture struct {
	layout    *goruntime.Layout
	regs      map[int]Registers
	opt       CaptureOptions
	truncated bool
	errs      []string
}

// Analyse reads the goroutines of a snapshot made by CopyGoroutines from
// the copy (mem: the copy's Image; the process may be running again or
// gone) and unwinds their stacks, filling the snapshot as Capture would.
// It does nothing for a snapshot that is not pending (Capture's, or one
// already analysed).
func (s *Snapshot) Analyse(mem MemReader, t *Table) error {
	p := s.pending
	if p == nil {
		return nil
	}
	s.pending = nil
	opt := p.opt
	opt.Deadline = time.Time{} // not held any more: no freeze deadline
	got, err := Capture(mem, t, p.layout, p.regs, opt)
	if err != nil {
		return err
	}
	*s = *got
	s.Truncated = s.Truncated || p.truncated
	for _, e := range p.errs {
		s.addErr(e)
	}
	return nil
}

// Pending reports whether the snapshot still waits for Analyse.
func (s *Snapshot) Pending() bool { return s.pending != nil }

func (opt CaptureOptions) withDefaults() CaptureOptions {
	if opt.MaxGoroutines <= 0 {
		opt.MaxGoroutines = 1 << 20
	}
	if opt.MaxFrames <= 0 {
		opt.MaxFrames = 200
	}
	if opt.MaxStackBytes <= 0 {
		opt.MaxStackBytes = 1 << 20
	}
	return opt
}

// copyPerGoroutine is about what CopyGoroutines copies per goroutine: its
// g and the used part of a parked stack (measured: 650–800 bytes at
// 10,000 goroutines of the test victims).
const copyPerGoroutine = 1024

// EstimateCopy is about how many bytes CopyGoroutines will copy, from the
// length of runtime.allgs read while the process still runs: a hint for
// setting the buffer aside before the hold (procmem.Copy.Reserve); 0 when
// allgs is unreadable.
func EstimateCopy(mem MemReader, opt CaptureOptions) uint64 {
	opt = opt.withDefaults()
	if opt.Allgs == 0 {
		return 0
	}
	_, n, err := readAllgs(mem, opt)
	if err != nil {
		return 0
	}
	return min(n, uint64(opt.MaxGoroutines)) * (8 + copyPerGoroutine)
}
