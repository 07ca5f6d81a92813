package inspect

import (
	"runtime"
	"sync"
	"time"

	"github.com/mapsentry/mapsentry/internal/procmem"
)

// A live operation copies up to tens of megabytes. Fresh memory costs a
// page fault per page when it is first written (on the VMs measured, a
// copy into new pages was 5–10 times slower than into pages used before),
// and a new buffer per operation leaves the last one's pages resident
// until the garbage collector and the scavenger get to them: the daemon
// held two or three copies' worth. So the Inspector keeps the last
// operation's buffer and hands it to the next one, which copies into
// pages that are mapped already; the daemon's memory is its base plus the
// largest recent copy. Nothing of a copy outlives its operation (results
// copy the bytes they keep), so reuse is safe. A buffer unused for
// keepBuffer is dropped.

// keepBuffer is how long an idle copy buffer is kept.
const keepBuffer = time.Minute

// collectFrom is the copy size from which an operation starts with a
// garbage collection: with a kept buffer of tens of megabytes live, the
// collector otherwise lets garbage grow to as much again before it runs
// (GOGC), and the daemon's peak with it. Before the stop it costs the
// process nothing; the buffer has no pointers, so marking is cheap.
const collectFrom = 8 << 20

type copyBuffer struct {
	mu    sync.Mutex
	buf   []byte
	timer *time.Timer
}

// reserve sets n bytes aside for cp — the kept buffer when it is large
// enough and not in use, else a new one (procmem.Copy.Reserve) — and
// returns the function that gives the buffer back when the operation is
// done.
func (b *copyBuffer) reserve(cp *procmem.Copy, n uint64) func() {
	if n == 0 {
		return func() {}
	}
	if n >= collectFrom {
		runtime.GC()
	}
	b.mu.Lock()
	buf := b.buf
	if uint64(cap(buf)) >= n {
		b.buf = nil // in use until given back
	} else {
		buf = nil
	}
	b.mu.Unlock()
	if buf != nil {
		cp.ReserveIn(buf[:n])
	} else {
		cp.Reserve(n)
		buf = cp.Spare()
	}
	return func() { b.giveBack(buf) }
}

// giveBack keeps buf for the next operation if it is the largest.
func (b *copyBuffer) giveBack(buf []byte) {
	if buf == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cap(buf) <= cap(b.buf) {
		return
	}
	b.buf = buf[:cap(buf)]
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timer = time.AfterFunc(keepBuffer, func() {
		b.mu.Lock()
		if cap(b.buf) == cap(buf) {
			b.buf = nil
		}
		b.mu.Unlock()
	})
}
