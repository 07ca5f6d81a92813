package inspect

import (
	"sync"
	"time"

	"github.com/mapsentry/mapsentry/internal/procmem"
)

// A live operation copies up to tens of megabytes. Fresh memory costs a
// page fault per page when it is first written (on the VMs measured, a
// copy into new pages was 5–10 times slower than into pages used before),
// so the buffer's pages are all mapped before the process is held
// (procmem.Buffer: outside the Go heap, populated in one system call).
// The Inspector keeps the last operation's buffer and hands it to the
// next one, which copies into pages that are mapped already; the daemon's
// memory is its base plus the largest recent copy. Nothing of a copy
// outlives its operation (results copy the bytes they keep), so reuse and
// unmapping are safe. A buffer unused for keepBuffer is unmapped.

// keepBuffer is how long an idle copy buffer is kept.
const keepBuffer = time.Minute

type copyBuffer struct {
	mu     sync.Mutex
	kept   *procmem.Buffer // idle, for the next operation
	timer  *time.Timer
	closed bool
}

// reserve sets n bytes aside for cp — the kept buffer when it is large
// enough and not in use, else a new one — and returns the function that
// gives the buffer back when the operation is done. Where a buffer
// cannot be mapped the copy reserves on the Go heap (procmem.Copy.Reserve).
func (b *copyBuffer) reserve(cp *procmem.Copy, n uint64) func() {
	if n == 0 {
		return func() {}
	}
	buf := b.take(n)
	if buf == nil {
		var err error
		if buf, err = procmem.NewBuffer(n); err != nil {
			cp.Reserve(n)
			return func() {}
		}
	}
	cp.ReserveIn(buf.Bytes()[:n])
	return func() { b.giveBack(buf) }
}

// scratchSize is the off-heap scratch an estimate reads its large
// prefixes into: a classic map's type inference reads up to 1024 buckets
// of its largest candidate size (~4.2 MB).
const scratchSize = 8 << 20

// scratch lends n bytes outside the Go heap for the reads before a hold
// (hmapdecode.Estimate's inference prefix): the kept buffer when it is
// idle and large enough, else a fresh unpopulated mapping that the
// returned function unmaps — on the heap those megabytes stayed resident
// after the estimate, under the copy buffer populated next. nil when
// neither can be had.
func (b *copyBuffer) scratch(n uint64) ([]byte, func()) {
	if buf := b.take(n); buf != nil {
		return buf.Bytes()[:n], func() { b.giveBack(buf) }
	}
	s, err := procmem.NewScratch(n)
	if err != nil {
		return nil, func() {}
	}
	return s.Bytes(), func() { _ = s.Free() }
}

// take hands out the kept buffer when it is idle and holds n bytes (in
// use until given back), else nil.
func (b *copyBuffer) take(n uint64) *procmem.Buffer {
	b.mu.Lock()
	defer b.mu.Unlock()
	buf := b.kept
	if buf == nil || uint64(buf.Len()) < n {
		return nil
	}
	b.kept = nil
	return buf
}

// giveBack keeps buf for the next operation if it is the largest idle
// one, and unmaps the other.
func (b *copyBuffer) giveBack(buf *procmem.Buffer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || (b.kept != nil && b.kept.Len() >= buf.Len()) {
		_ = buf.Free()
		return
	}
	if b.kept != nil {
		_ = b.kept.Free()
	}
	b.kept = buf
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timer = time.AfterFunc(keepBuffer, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.kept == buf {
			b.kept = nil
			_ = buf.Free()
		}
	})
}

// close unmaps the idle buffer; buffers in use are unmapped when given
// back (the Inspector is stopping).
func (b *copyBuffer) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.kept != nil {
		_ = b.kept.Free()
		b.kept = nil
	}
	if b.timer != nil {
		b.timer.Stop()
	}
}

// scratchMem is a running process's memory for the reads before a hold,
// handing out large reads (scratchMin and up) in a scratch buffer rather
// than on the Go heap: hmapdecode reads through View when its memory has
// it. Each View takes a part of buf of its own (nothing is overwritten
// while the estimate runs); once buf is used up, reads go to the heap.
type scratchMem struct {
	*procmem.Reader
	buf  []byte
	used int
}

// scratchMin: smaller reads are not worth a part of the scratch.
const scratchMin = 64 << 10

func (s *scratchMem) View(addr, n uint64) ([]byte, bool) {
	if n < scratchMin || n > uint64(len(s.buf)-s.used) {
		return nil, false
	}
	b := s.buf[s.used : s.used+int(n) : s.used+int(n)]
	if _, err := s.ReadAt(b, addr); err != nil {
		return nil, false
	}
	s.used += int(n)
	return b, true
}
