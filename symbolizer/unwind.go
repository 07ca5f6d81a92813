package symbolizer

import (
	"encoding/binary"
	"fmt"

	"github.com/mapsentry/mapsentry/goruntime"
)

// stackChunk is how much stack is read at once: parked goroutines rarely
// use more than this between their saved SP and the stack top, so one read
// per goroutine is the common case.
const stackChunk = 16 << 10

// spInfo memoizes, per PC, what unwinding a frame there needs.
type spInfo struct {
	delta int64 // SP delta (frame size below the return address); -1: unknown
	stop  bool  // bottom of a goroutine stack
}

// unwinder walks goroutine stacks the way the runtime's own unwinder does:
// the caller's PC is the return address at SP + pcsp(pc), its SP is 8 above
// that. Where the pclntab has no entry for a PC (assembly without
// metadata, corrupt tables) it falls back to the frame-pointer chain.
type unwinder struct {
	mem       MemReader
	t         *Table
	maxFrames int
	maxStack  int
	spd       map[uint64]spInfo
	bias      uint64 // PIE load bias: table address = pc - bias

	// Current stack window.
	lo, hi  uint64 // goroutine stack bounds
	floor   uint64 // lowest address this walk reads (the starting SP)
	winBase uint64
	win     []byte
	buf     []byte
	read    int // stack bytes read for this goroutine
}

// isBottom reports whether a function ends a goroutine's stack (the
// runtime's unwinder stops at these too).
func isBottom(name string) bool {
	switch name {
	case "runtime.goexit", "runtime.mstart", "runtime.mstart0", "runtime.rt0_go",
		"runtime.mcall", "runtime.morestack", "runtime.systemstack":
		return true
	}
	return false
}

func (u *unwinder) info(pc uint64) spInfo {
	if si, ok := u.spd[pc]; ok {
		return si
	}
	si := spInfo{delta: -1}
	if f, err := u.t.funcForPC(pc - u.bias); err == nil {
		si.stop = isBottom(f.Name)
		if d, err := u.t.SPDelta(&f, pc-u.bias); err == nil {
			si.delta = d
		}
	}
	if len(u.spd) > 1<<16 {
		clear(u.spd)
	}
	u.spd[pc] = si
	return si
}

func (u *unwinder) word(addr uint64) (uint64, error) {
	if addr < u.lo || addr+8 > u.hi || addr+8 < addr {
		return 0, fmt.Errorf("stack read at %#x outside %#x..%#x", addr, u.lo, u.hi)
	}
	if addr >= u.winBase && addr+8 <= u.winBase+uint64(len(u.win)) {
		return binary.LittleEndian.Uint64(u.win[addr-u.winBase:]), nil
	}
	want := addr
	// Start the window at the walk's lowest address when that is close:
	// the saved BP just below a return address then hits the same window.
	if addr > u.floor && addr-u.floor < 64 {
		addr = u.floor
	} else if addr >= u.lo+8 {
		addr -= 8
	}
	n := uint64(stackChunk)
	if u.hi-addr < n {
		n = u.hi - addr
	}
	if u.read+int(n) > u.maxStack {
		return 0, fmt.Errorf("stack read budget of %d bytes exhausted", u.maxStack)
	}
	if cap(u.buf) < int(n) {
		u.buf = make([]byte, stackChunk)
	}
	u.win = u.buf[:n]
	if _, err := u.mem.ReadAt(u.win, addr); err != nil {
		u.win = nil
		return 0, fmt.Errorf("read stack at %#x: %w", addr, err)
	}
	u.read += int(n)
	u.winBase = addr
	return binary.LittleEndian.Uint64(u.win[want-addr:]), nil
}

// goroutine fills rg.PCs from the right starting registers for g's state.
func (u *unwinder) goroutine(rg *RawGoroutine, g *gFields, regs map[int]Registers) {
	u.lo, u.hi, u.win, u.read = g.stackLo, g.stackHi, nil, 0
	if g.status&^goruntime.GScan == goruntime.GIdle {
		return // being created: no stack yet
	}
	if u.hi <= u.lo || u.hi-u.lo > 1<<30 {
		rg.StackError = fmt.Sprintf("bad stack bounds %#x..%#x", u.lo, u.hi)
		return
	}
	var pc, sp, bp uint64
	st := g.status &^ goruntime.GScan
	switch {
	case st == goruntime.GRunning:
		r, ok := regs[rg.TID]
		if !ok || rg.TID == 0 {
			rg.StackError = "running on another thread; no registers"
			return
		}
		if r.SP < u.lo || r.SP >= u.hi {
			// On the thread's g0 or signal stack: the goroutine's own
			// frames are not reachable from these registers. systemstack
			// saves the goroutine's context in g.sched when it switches
			// (map growth, large allocations), so start there; after a
			// switch to the signal stack that context may be older.
			known := func(pc uint64) bool { return u.info(pc).delta >= 0 }
			if pc2, sp2, bp2, ok := SignalContext(u.mem, r.SP, u.lo, u.hi, known); ok {
				// In a signal handler on the signal stack (async
				// preemption, profiling): the kernel saved the
				// interrupted registers on that stack.
				rg.StackError = fmt.Sprintf("thread %d was in a signal handler: frames from the interrupted context", rg.TID)
				pc, sp, bp, rg.Trap = pc2, sp2, bp2, true
				break
			}
			if g.schedSP < u.lo || g.schedSP >= u.hi || g.schedPC == 0 {
				rg.StackError = fmt.Sprintf("thread %d is off the goroutine stack (sp %#x)", rg.TID, r.SP)
				return
			}
			rg.StackError = fmt.Sprintf("thread %d was off the goroutine stack (sp %#x): frames from the goroutine's saved context", rg.TID, r.SP)
			pc, sp, bp = g.schedPC, g.schedSP, g.schedBP
			break
		}
		pc, sp, bp, rg.Trap = r.PC, r.SP, r.BP, true
	case st == goruntime.GSyscall && g.syscallSP != 0:
		pc, sp, bp = g.syscallPC, g.syscallSP, g.syscallBP
	default:
		pc, sp, bp = g.schedPC, g.schedSP, g.schedBP
	}
	if sp == 0 || pc == 0 {
		rg.StackError = "no saved context"
		return
	}
	u.floor = sp
	rg.PCs = u.walk(pc, sp, bp, rg)
}

// Signal frames (x86-64 Linux): the kernel pushes an rt_sigframe at the
// top of the alternate signal stack; its ucontext holds uc_stack (the
// altstack: ss_sp at +16, ss_size at +32) and uc_mcontext at +40, whose
// rbp, rsp and rip are at +80, +120 and +128.
const (
	sigScanBytes   = 64 << 10 // Go's signal stacks are 32 KiB
	ucStackSP      = 16
	ucStackSize    = 32
	ucMcontext     = 40
	mcRBP, mcRSP   = 80, 120
	mcRIP          = 128
	ucMinBytes     = ucMcontext + mcRIP + 8
	maxSigStack    = 1 << 24
	maxUcFlagsBits = 0x1f
)

// SignalContext finds the registers a signal interrupted on a thread whose
// SP is on its signal stack: a ucontext above sp whose uc_stack contains
// sp, whose saved rsp is within [lo, hi) (the goroutine's stack) and whose
// saved rip known accepts (a PC the pclntab knows). It reads at most
// sigScanBytes of mem.
func SignalContext(mem MemReader, sp, lo, hi uint64, known func(pc uint64) bool) (pc, rsp, rbp uint64, ok bool) {
	const page = 4096
	base := sp &^ 7
	// Page by page: the read stops at the end of the mapping, and the
	// frame is below it.
	buf := make([]byte, 0, sigScanBytes+page)
	for len(buf) < sigScanBytes {
		a := base + uint64(len(buf))
		n := int((a+page)&^(page-1) - a)
		got, err := readToMappingEnd(mem, buf[len(buf):len(buf)+n], a)
		buf = buf[:len(buf)+got]
		if err != nil || got < n {
			break
		}
	}
	word := func(i int) uint64 { return binary.LittleEndian.Uint64(buf[i:]) }
	// The kernel's frame is at the top: scan down, so that copies of the
	// altstack description in the handler's own frames come last.
	for i := len(buf) - ucMinBytes; i >= 0; i -= 8 {
		ssSP, ssSize := word(i+ucStackSP), word(i+ucStackSize)
		if ssSize < 2048 || ssSize > maxSigStack || ssSP > sp || sp-ssSP >= ssSize {
			continue
		}
		at := base + uint64(i)
		if at+ucMinBytes > ssSP+ssSize || word(i)&^maxUcFlagsBits != 0 {
			continue
		}
		rip, rsp := word(i+ucMcontext+mcRIP), word(i+ucMcontext+mcRSP)
		if rsp < lo || rsp >= hi || rip == 0 || !known(rip) {
			continue
		}
		return rip, rsp, word(i + ucMcontext + mcRBP), true
	}
	return 0, 0, 0, false
}

// MappedReader is memory that can read up to the end of the mapping an
// address is in, and tell an address in no mapping from bytes it missed
// (procmem.Copy.ReadMapped): a scan that runs off the top of a stack must
// not count the page beyond it as memory the copy left out.
type MappedReader interface {
	ReadMapped(p []byte, addr uint64) (int, error)
}

// readToMappingEnd reads p at addr, stopping where the mapping does when
// mem can tell; n is what was read.
func readToMappingEnd(mem MemReader, p []byte, addr uint64) (int, error) {
	if m, ok := mem.(MappedReader); ok {
		return m.ReadMapped(p, addr)
	}
	if _, err := mem.ReadAt(p, addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (u *unwinder) walk(pc, sp, bp uint64, rg *RawGoroutine) []uint64 {
	pcs := make([]uint64, 0, 16)
	for len(pcs) < u.maxFrames {
		pcs = append(pcs, pc)
		si := u.info(pc)
		if si.stop {
			return pcs
		}
		var ret, nsp, nbp uint64
		var err error
		if si.delta >= 0 {
			// Frame size from the pclntab: return address just above it.
			nsp = sp + uint64(si.delta) + 8
			ret, err = u.word(nsp - 8)
			if err == nil && si.delta > 0 {
				// Go saves the caller's BP just below the return address.
				nbp, _ = u.word(nsp - 16)
			} else {
				nbp = bp
			}
		} else {
			// No pclntab entry: trust the frame-pointer chain.
			if bp < sp || bp < u.lo || bp >= u.hi {
				rg.StackError = fmt.Sprintf("no unwind information at pc %#x", pc)
				return pcs
			}
			ret, err = u.word(bp + 8)
			if err == nil {
				nbp, err = u.word(bp)
			}
			nsp = bp + 16
		}
		if err != nil {
			rg.StackError = err.Error()
			return pcs
		}
		if ret == 0 {
			return pcs
		}
		if nsp <= sp || nsp >= u.hi {
			return pcs
		}
		pc, sp, bp = ret, nsp, nbp
	}
	rg.Truncated = true
	return pcs
}
