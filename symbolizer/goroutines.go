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
	if opt.Allgs == 0 {
		return nil, fmt.Errorf("capture goroutines: %w", ErrNoAllgs)
	}
	if l.Arch != "amd64" {
		return nil, fmt.Errorf("capture goroutines on %s: %w", l.Arch, goruntime.ErrUnsupported)
	}
	opt = opt.withDefaults()
	gl, err := newGLayout(l)
	if err != nil {
		return nil, err
	}
	ptr, n, err := readAllgs(mem, opt)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{GoMinor: l.Version.Minor, Nanotime: opt.Nanotime, LoadBias: opt.LoadBias}
	if n > uint64(opt.MaxGoroutines) {
		s.Truncated = true
		s.addErr(fmt.Sprintf("%d goroutines, reading the first %d", n, opt.MaxGoroutines))
		n = uint64(opt.MaxGoroutines)
	}
	gptrs := make([]byte, n*8)
	if n > 0 {
		if _, err := mem.ReadAt(gptrs, ptr); err != nil {
			return nil, fmt.Errorf("read %d g pointers at %#x: %w", n, ptr, err)
		}
	}
	u := &unwinder{mem: mem, t: t, maxFrames: opt.MaxFrames, maxStack: opt.MaxStackBytes,
		spd: make(map[uint64]spInfo), bias: opt.LoadBias}
	ms := make(map[uint64]mInfo)
	gbuf := make([]byte, gl.size)
	threadsSeen := make(map[int]bool)
	for i := uint64(0); i < n; i++ {
		if i%64 == 0 && !opt.Deadline.IsZero() && time.Now().After(opt.Deadline) {
			s.Truncated = true
			s.addErr(fmt.Sprintf("deadline hit after %d of %d goroutines", i, n))
			break
		}
		gp := binary.LittleEndian.Uint64(gptrs[i*8:])
		if gp == 0 {
			continue
		}
		if _, err := mem.ReadAt(gbuf, gp); err != nil {
			s.addErr(fmt.Sprintf("read g %d at %#x: %v", i, gp, err))
			continue
		}
		g := gl.decode(gbuf)
		st := g.status &^ goruntime.GScan
		if st == goruntime.GDead {
			continue // the runtime does not print dead goroutines either
		}
		rg := RawGoroutine{Addr: gp, ID: g.goid, Status: g.status, WaitReason: g.waitreason,
			WaitSince: g.waitsince, ParentID: g.parent, GoPC: g.gopc, StartPC: g.startpc,
			LockedM: g.lockedm != 0, MID: -1, PID: -1}
		if g.m != 0 {
			mi, ok := ms[g.m]
			if !ok {
				mi = gl.readM(mem, g.m)
				ms[g.m] = mi
			}
			rg.MID, rg.TID = mi.id, mi.tid
			if mi.curg == gp {
				rg.PID = mi.pid
				if !threadsSeen[mi.tid] && mi.tid != 0 {
					threadsSeen[mi.tid] = true
					s.Threads = append(s.Threads, Thread{TID: mi.tid, MID: mi.id, GoID: g.goid, Regs: regs[mi.tid]})
				}
			}
		}
		u.goroutine(&rg, &g, regs)
		if rg.StackError != "" && len(s.Errors) < 64 && st != goruntime.GRunning {
			s.addErr(fmt.Sprintf("goroutine %d: %s", rg.ID, rg.StackError))
		}
		s.Goroutines = append(s.Goroutines, rg)
	}
	// Threads running no goroutine, in thread order (not map order: the
	// same process gives the same snapshot).
	var idle []int
	for tid := range regs {
		if !threadsSeen[tid] {
			idle = append(idle, tid)
		}
	}
	slices.Sort(idle)
	for _, tid := range idle {
		s.Threads = append(s.Threads, Thread{TID: tid, MID: -1, Regs: regs[tid]})
	}
	return s, nil
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
