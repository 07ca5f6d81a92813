package symbolizer

import (
	"encoding/binary"
	"fmt"
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
	if opt.Allgs == 0 {
		return nil, fmt.Errorf("copy goroutines: %w", ErrNoAllgs)
	}
	if l.Arch != "amd64" {
		return nil, fmt.Errorf("copy goroutines on %s: %w", l.Arch, goruntime.ErrUnsupported)
	}
	opt = opt.withDefaults()
	gl, err := newGLayout(l)
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
	mem.Want(ptr, n*8)
	if err := mem.Flush(); err != nil {
		return nil, err
	}
	gptrs, ok := mem.View(ptr, n*8)
	if !ok {
		return s, nil // Analyse reports the unreadable array
	}
	late := func(what string) bool {
		if !opt.Deadline.IsZero() && time.Now().After(opt.Deadline) {
			s.pending.errs = append(s.pending.errs, "the freeze deadline ended the copy before "+what)
			s.pending.truncated = true
			return true
		}
		return false
	}
	for i := uint64(0); i < n; i++ {
		if gp := binary.LittleEndian.Uint64(gptrs[i*8:]); gp != 0 {
			mem.Want(gp, uint64(gl.size))
		}
	}
	if err := mem.Flush(); err != nil {
		return nil, err
	}
	if late("the m's and stacks") {
		return s, nil
	}
	// Live goroutines and their m's.
	type live struct {
		addr uint64
		g    gFields
	}
	gs := make([]live, 0, n)
	ms := make(map[uint64]bool)
	for i := uint64(0); i < n; i++ {
		gp := binary.LittleEndian.Uint64(gptrs[i*8:])
		b, ok := mem.View(gp, uint64(gl.size))
		if gp == 0 || !ok {
			continue
		}
		g := gl.decode(b)
		if g.status&^goruntime.GScan == goruntime.GDead {
			continue
		}
		gs = append(gs, live{gp, g})
		if g.m != 0 && !ms[g.m] {
			ms[g.m] = true
			mem.Want(g.m, uint64(gl.mSize))
		}
	}
	if err := mem.Flush(); err != nil {
		return nil, err
	}
	if late("the stacks") {
		return s, nil
	}
	// p ids, and every stack from where its walk starts.
	mi := make(map[uint64]mInfo, len(ms))
	for m := range ms {
		b, ok := mem.View(m, uint64(gl.mSize))
		if !ok {
			continue
		}
		info := mInfo{tid: int(int64(binary.LittleEndian.Uint64(b[gl.mProcID:]))),
			curg: binary.LittleEndian.Uint64(b[gl.mCurg:])}
		if p := binary.LittleEndian.Uint64(b[gl.mP:]); p != 0 {
			mem.Want(p+uint64(goruntime.POffsetID), 4)
		}
		mi[m] = info
	}
	seenThreads := make(map[int]bool)
	s.Goroutines = make([]RawGoroutine, 0, len(gs))
	for _, lg := range gs {
		g := &lg.g
		var tid int
		if info, ok := mi[g.m]; ok && g.m != 0 {
			tid = info.tid
			if info.curg == lg.addr && tid != 0 {
				seenThreads[tid] = true
			}
		}
		wantStack(mem, g, tid, regs, opt.MaxStackBytes)
		// The g as read, without frames: what a stage that copies more
		// while the process is held (the diagnosis) needs to know where
		// stacks are. Analyse replaces it.
		s.Goroutines = append(s.Goroutines, RawGoroutine{Addr: lg.addr, ID: g.goid, Status: g.status,
			WaitReason: g.waitreason, WaitSince: g.waitsince, ParentID: g.parent, GoPC: g.gopc, StartPC: g.startpc,
			LockedM: g.lockedm != 0, MID: -1, PID: -1, TID: tid})
	}
	// Threads whose m was not found still get their stack copied: the
	// crash site is located from a probed thread's registers.
	for tid, r := range regs {
		if !seenThreads[tid] && r.SP != 0 {
			wantAboveSP(mem, r.SP)
		}
	}
	if err := mem.Flush(); err != nil {
		return nil, err
	}
	return s, nil
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
