package symbolizer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mapsentry/mapsentry/goruntime"
)

// Registers is the part of a thread's user registers the unwinder needs.
// The caller supplies them for threads running Go code: the crashing
// thread's from the BPF event, others from threadregs.
type Registers struct {
	PC uint64 `json:"pc"`
	SP uint64 `json:"sp"`
	BP uint64 `json:"bp,omitempty"`
}

// CaptureOptions bound a capture. Zero values choose the defaults.
type CaptureOptions struct {
	// Allgs is the address of runtime.allgs (FindAllgs). Required.
	Allgs uint64
	// MaxGoroutines bounds the goroutines read (default 1<<20).
	MaxGoroutines int
	// MaxFrames bounds the physical frames per goroutine (default 200).
	MaxFrames int
	// MaxStackBytes bounds the stack bytes read per goroutine (default 1 MiB).
	MaxStackBytes int
	// Deadline stops the capture early; what was not read is marked
	// truncated. Zero: no deadline.
	Deadline time.Time
	// Nanotime is the target's runtime.nanotime() at the freeze
	// (CLOCK_MONOTONIC in ns), used for "N minutes" waits. Zero: unknown.
	Nanotime int64
	// LoadBias is where a PIE binary was loaded minus its link address
	// (procmem.LoadBias); 0 for ordinary executables. Allgs is a link address.
	LoadBias uint64
}

// Snapshot is what a capture read from a frozen process: raw goroutines
// with stack PCs, not yet symbolized. Symbolizing needs only the binary, so
// it can run after the process was resumed.
type Snapshot struct {
	GoMinor    int
	Goroutines []RawGoroutine
	Threads    []Thread
	Truncated  bool     // deadline or bounds hit
	Errors     []string // per-goroutine problems, bounded
	Nanotime   int64
	LoadBias   uint64 // subtracted from process PCs before table lookups

	pending *pendingCapture // copied, not yet analysed (CopyGoroutines)
}

// RawGoroutine is one g as read from memory.
type RawGoroutine struct {
	Addr       uint64
	ID         int64
	Status     uint32 // with the _Gscan bit
	WaitReason uint8
	WaitSince  int64
	ParentID   int64
	GoPC       uint64
	StartPC    uint64
	LockedM    bool
	MID        int64 // -1: no m
	PID        int64 // -1: no p
	TID        int   // m.procid, 0: none
	// PCs of the physical frames, innermost first. Trap is true when PCs[0]
	// came from a thread's registers (an exact PC, not a return address).
	PCs        []uint64
	Trap       bool
	StackError string
	Truncated  bool
}

// Thread is one OS thread the caller gave registers for, and the
// goroutine its m was running.
type Thread struct {
	TID  int       `json:"tid"`
	MID  int64     `json:"m"`
	GoID int64     `json:"goroutine,omitempty"`
	Regs Registers `json:"regs"`
}

// Capture reads every goroutine of a frozen process through mem: allgs,
// each g, its m and p, and the PCs of its stack. regs maps thread id to
// the registers of threads that were running Go code; a running goroutine
// whose thread is absent gets no stack ("running on another thread").
func Capture(mem MemReader, t *Table, l *goruntime.Layout, regs map[int]Registers, opt CaptureOptions) (*Snapshot, error) {
	opt, gl, err := captureLayout("capture goroutines", l, opt)
	if err != nil {
		return nil, err
	}
	ptr, n, err := readAllgs(mem, opt)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{GoMinor: l.Version.Minor, Nanotime: opt.Nanotime, LoadBias: opt.LoadBias}
	gptrs, err := readGPointers(mem, s, ptr, n, opt.MaxGoroutines)
	if err != nil {
		return nil, err
	}
	c := &capture{mem: mem, gl: gl, regs: regs, s: s,
		u: &unwinder{mem: mem, t: t, maxFrames: opt.MaxFrames, maxStack: opt.MaxStackBytes,
			spd: make(map[uint64]spInfo), bias: opt.LoadBias},
		ms: make(map[uint64]mInfo), gbuf: make([]byte, gl.size), threadsSeen: make(map[int]bool)}
	c.goroutines(gptrs, opt.Deadline)
	c.idleThreads()
	return s, nil
}

// captureLayout is what Capture and CopyGoroutines check before reading
// anything (what names the operation in their errors): allgs must be
// known and the unwinder reads amd64 frames only. It returns the options
// with their defaults and the version's g and m offsets, so that a
// layout the runtime tables cannot resolve fails before the process is
// read at all.
func captureLayout(what string, l *goruntime.Layout, opt CaptureOptions) (CaptureOptions, *gLayout, error) {
	if opt.Allgs == 0 {
		return opt, nil, fmt.Errorf("%s: %w", what, ErrNoAllgs)
	}
	if l.Arch != "amd64" {
		return opt, nil, fmt.Errorf("%s on %s: %w", what, l.Arch, goruntime.ErrUnsupported)
	}
	opt = opt.withDefaults()
	gl, err := newGLayout(l)
	if err != nil {
		return opt, nil, err
	}
	return opt, gl, nil
}

// readGPointers reads the first n of allgs' g pointers at ptr, at most
// maxGs of them: allgs' length comes from the target's memory, so it
// bounds the allocation, and a longer list is reported in s as truncated.
func readGPointers(mem MemReader, s *Snapshot, ptr, n uint64, maxGs int) ([]byte, error) {
	if n > uint64(maxGs) {
		s.Truncated = true
		s.addErr(fmt.Sprintf("%d goroutines, reading the first %d", n, maxGs))
		n = uint64(maxGs)
	}
	gptrs := make([]byte, n*8)
	if n > 0 {
		if _, err := mem.ReadAt(gptrs, ptr); err != nil {
			return nil, fmt.Errorf("read %d g pointers at %#x: %w", n, ptr, err)
		}
	}
	return gptrs, nil
}

// capture is the state of one Capture walk over allgs: the m's read so
// far (many goroutines share one, and each is read once), the threads
// whose running goroutine was found, and one g buffer reused for every g.
type capture struct {
	mem         MemReader
	gl          *gLayout
	u           *unwinder
	regs        map[int]Registers
	s           *Snapshot
	ms          map[uint64]mInfo
	gbuf        []byte
	threadsSeen map[int]bool
}

// goroutines reads each g that gptrs lists, in allgs order, until the
// deadline (checked every 64 goroutines: time.Now is not free at a
// million of them); what the deadline leaves unread is reported as
// truncated.
func (c *capture) goroutines(gptrs []byte, deadline time.Time) {
	n := uint64(len(gptrs) / 8)
	for i := uint64(0); i < n; i++ {
		if i%64 == 0 && !deadline.IsZero() && time.Now().After(deadline) {
			c.s.Truncated = true
			c.s.addErr(fmt.Sprintf("deadline hit after %d of %d goroutines", i, n))
			break
		}
		gp := binary.LittleEndian.Uint64(gptrs[i*8:])
		if gp == 0 {
			continue
		}
		c.goroutine(i, gp)
	}
}

// goroutine reads the g at gp (allgs[i]) and, unless it is dead, adds it
// to the snapshot with its m, its thread and the PCs of its stack. An
// unreadable g or stack is an error of that goroutine, not of the
// capture: a hostile or torn allgs must not stop the others being read.
func (c *capture) goroutine(i, gp uint64) {
	s := c.s
	if _, err := c.mem.ReadAt(c.gbuf, gp); err != nil {
		s.addErr(fmt.Sprintf("read g %d at %#x: %v", i, gp, err))
		return
	}
	g := c.gl.decode(c.gbuf)
	st := g.status &^ goruntime.GScan
	if st == goruntime.GDead {
		return // the runtime does not print dead goroutines either
	}
	rg := RawGoroutine{Addr: gp, ID: g.goid, Status: g.status, WaitReason: g.waitreason,
		WaitSince: g.waitsince, ParentID: g.parent, GoPC: g.gopc, StartPC: g.startpc,
		LockedM: g.lockedm != 0, MID: -1, PID: -1}
	if g.m != 0 {
		c.withM(&rg, g.m)
	}
	c.u.goroutine(&rg, &g, c.regs)
	if rg.StackError != "" && len(s.Errors) < 64 && st != goruntime.GRunning {
		s.addErr(fmt.Sprintf("goroutine %d: %s", rg.ID, rg.StackError))
	}
	s.Goroutines = append(s.Goroutines, rg)
}

// withM fills in rg's m and thread from the m at m (read once per m). A
// goroutine that is its m's curg also owns the m's p, and names the
// thread in the snapshot's thread list: the first such goroutine of each
// thread does, in allgs order.
func (c *capture) withM(rg *RawGoroutine, m uint64) {
	mi, ok := c.ms[m]
	if !ok {
		mi = c.gl.readM(c.mem, m)
		c.ms[m] = mi
	}
	rg.MID, rg.TID = mi.id, mi.tid
	if mi.curg != rg.Addr {
		return
	}
	rg.PID = mi.pid
	if !c.threadsSeen[mi.tid] && mi.tid != 0 {
		c.threadsSeen[mi.tid] = true
		c.s.Threads = append(c.s.Threads, Thread{TID: mi.tid, MID: mi.id, GoID: rg.ID, Regs: c.regs[mi.tid]})
	}
}

// idleThreads lists the threads the caller gave registers for that run no
// goroutine, in thread order (not map order: the same process gives the
// same snapshot).
func (c *capture) idleThreads() {
	var idle []int
	for tid := range c.regs {
		if !c.threadsSeen[tid] {
			idle = append(idle, tid)
		}
	}
	slices.Sort(idle)
	for _, tid := range idle {
		c.s.Threads = append(c.s.Threads, Thread{TID: tid, MID: -1, Regs: c.regs[tid]})
	}
}

// readAllgs reads the runtime.allgs slice header: array and length.
func readAllgs(mem MemReader, opt CaptureOptions) (ptr, n uint64, err error) {
	var hdr [24]byte
	allgs := opt.Allgs + opt.LoadBias
	if _, err := mem.ReadAt(hdr[:], allgs); err != nil {
		return 0, 0, fmt.Errorf("read runtime.allgs at %#x: %w", allgs, err)
	}
	ptr, n = binary.LittleEndian.Uint64(hdr[:]), binary.LittleEndian.Uint64(hdr[8:])
	if c := binary.LittleEndian.Uint64(hdr[16:]); n > c {
		return 0, 0, fmt.Errorf("runtime.allgs len %d > cap %d: torn or not allgs", n, c)
	}
	return ptr, n, nil
}

func (s *Snapshot) addErr(e string) {
	if len(s.Errors) < 64 {
		s.Errors = append(s.Errors, e)
	}
}

// gLayout is the resolved offsets of one version's g and m.
type gLayout struct {
	size                                                 int
	stackLo, stackHi, m, schedSP, schedPC, schedBP       int
	syscallSP, syscallPC, syscallBP                      int // syscallBP -1 before 1.23
	status, goid, waitSince, waitReason, lockedM, parent int // parent -1 before 1.21
	gopc, startpc                                        int
	mCurg, mProcID, mP, mID                              int
	mSize                                                int
}

func newGLayout(l *goruntime.Layout) (*gLayout, error) {
	m := l.M
	if !m.Curg.Known() {
		m = goruntime.MOffsetsFor(l.Version.Minor)
	}
	g := l.G
	var errs []error
	get := func(o goruntime.Offset, name string) int {
		v, err := o.Get(name)
		if err != nil {
			errs = append(errs, err)
			return 0
		}
		return int(v)
	}
	opt := func(o goruntime.Offset) int {
		if !o.Known() {
			return -1
		}
		return int(o)
	}
	gl := &gLayout{
		stackLo: get(g.StackLo, "g.stack.lo"), stackHi: get(g.StackHi, "g.stack.hi"), m: get(g.M, "g.m"),
		schedSP: get(g.SchedSP, "g.sched.sp"), schedPC: get(g.SchedPC, "g.sched.pc"), schedBP: get(g.SchedBP, "g.sched.bp"),
		syscallSP: get(g.SyscallSP, "g.syscallsp"), syscallPC: get(g.SyscallPC, "g.syscallpc"), syscallBP: opt(g.SyscallBP),
		status: get(g.AtomicStatus, "g.atomicstatus"), goid: get(g.Goid, "g.goid"),
		waitSince: get(g.WaitSince, "g.waitsince"), waitReason: get(g.WaitReason, "g.waitreason"),
		lockedM: get(g.LockedM, "g.lockedm"), parent: opt(g.ParentGoid),
		gopc: get(g.GoPC, "g.gopc"), startpc: get(g.StartPC, "g.startpc"),
		mCurg: get(m.Curg, "m.curg"), mProcID: get(m.ProcID, "m.procid"), mP: get(m.P, "m.p"), mID: get(m.ID, "m.id"),
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("goroutine layout for %s: %w", l.Version, errors.Join(errs...))
	}
	for _, o := range []int{gl.stackHi, gl.m, gl.schedBP, gl.syscallPC, gl.syscallBP, gl.status, gl.goid,
		gl.waitSince, gl.lockedM, gl.parent, gl.gopc, gl.startpc} {
		if o+8 > gl.size {
			gl.size = o + 8
		}
	}
	for _, o := range []int{gl.mCurg, gl.mProcID, gl.mP, gl.mID} {
		if o+8 > gl.mSize {
			gl.mSize = o + 8
		}
	}
	if gl.size > 4096 || gl.mSize > 8192 {
		return nil, fmt.Errorf("goroutine layout for %s: offsets out of range", l.Version)
	}
	return gl, nil
}

type gFields struct {
	stackLo, stackHi, m, schedSP, schedPC, schedBP uint64
	syscallSP, syscallPC, syscallBP                uint64
	status                                         uint32
	goid, waitsince, parent                        int64
	waitreason                                     uint8
	lockedm, gopc, startpc                         uint64
}

func (gl *gLayout) decode(b []byte) gFields {
	u64 := func(o int) uint64 {
		if o < 0 {
			return 0
		}
		return binary.LittleEndian.Uint64(b[o:])
	}
	return gFields{
		stackLo: u64(gl.stackLo), stackHi: u64(gl.stackHi), m: u64(gl.m),
		schedSP: u64(gl.schedSP), schedPC: u64(gl.schedPC), schedBP: u64(gl.schedBP),
		syscallSP: u64(gl.syscallSP), syscallPC: u64(gl.syscallPC), syscallBP: u64(gl.syscallBP),
		status: binary.LittleEndian.Uint32(b[gl.status:]), goid: int64(u64(gl.goid)),
		waitsince: int64(u64(gl.waitSince)), waitreason: b[gl.waitReason], parent: int64(u64(gl.parent)),
		lockedm: u64(gl.lockedM), gopc: u64(gl.gopc), startpc: u64(gl.startpc),
	}
}

type mInfo struct {
	id, pid int64
	tid     int
	curg    uint64
}

func (gl *gLayout) readM(mem MemReader, m uint64) mInfo {
	mi := mInfo{id: -1, pid: -1}
	b := make([]byte, gl.mSize)
	if _, err := mem.ReadAt(b, m); err != nil {
		return mi
	}
	mi.id = int64(binary.LittleEndian.Uint64(b[gl.mID:]))
	mi.tid = int(int64(binary.LittleEndian.Uint64(b[gl.mProcID:])))
	mi.curg = binary.LittleEndian.Uint64(b[gl.mCurg:])
	if p := binary.LittleEndian.Uint64(b[gl.mP:]); p != 0 {
		var id [4]byte
		if _, err := mem.ReadAt(id[:], p+uint64(goruntime.POffsetID)); err == nil {
			mi.pid = int64(int32(binary.LittleEndian.Uint32(id[:])))
		}
	}
	return mi
}

// IsSystem reports whether the goroutine is one the runtime hides from
// tracebacks unless GOTRACEBACK=system (runtime.isSystemGoroutine, by its
// start function).
func IsSystem(startFunc string) bool {
	switch startFunc {
	case "runtime.main", "runtime.handleAsyncEvent", "":
		return false
	}
	return strings.HasPrefix(startFunc, "runtime.")
}
