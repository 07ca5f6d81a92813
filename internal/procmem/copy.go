package procmem

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Copy is how a held process is read: while it is held, only bytes are
// copied — many ranges per system call (process_vm_readv, up to iovMax
// ranges each) into one buffer per batch — and after the release every
// decoder runs on Image, which never touches the process. The copy is
// bounded by the Reader's byte budget; what does not fit is recorded as a
// Cut, never read later.
//
// Reads through Copy.ReadAt are copied through: served from the copy when
// it has them, else read from the process once and kept, so that a small
// dependent walk done while held (locating a map) reads the same bytes
// again from Image after the release.
type Copy struct {
	r *Reader

	mu       sync.Mutex
	segs     []segment // sorted, disjoint
	shared   bool      // segs was handed out by Image: copy before changing
	bytes    int64     // copied from the process
	static   int64     // inserted (Insert)
	want     []span
	cuts     []Cut
	cutN     int
	cutB     int64
	calls    int64
	noVM     bool      // process_vm_readv refused: read /proc/PID/mem instead
	spare    []byte    // reserved buffer not used yet (Reserve)
	reserved []byte    // the whole reserved buffer
	maps     *mappings // readable mappings, read at the first unreadable range
}

type span struct{ addr, n uint64 }

// iovMax is the kernel's UIO_MAXIOV: remote ranges per process_vm_readv.
const iovMax = 1024

// maxCuts bounds the cuts listed (all are counted).
const maxCuts = 64

// Copy returns the reader's copy of the process (one per Reader).
func (r *Reader) Copy() *Copy {
	r.copyOnce.Do(func() { r.cp = &Copy{r: r} })
	return r.cp
}

// CopyStats say what a copy holds and what it cost.
type CopyStats struct {
	Bytes  int64 `json:"bytes"`
	Ranges int   `json:"ranges"`
	// Calls is the system calls that copied (process_vm_readv, or reads
	// of /proc/PID/mem where that is refused).
	Calls int64 `json:"calls"`
	// CutRanges and CutBytes count what was left out; Cuts lists the first.
	CutRanges int   `json:"cut_ranges,omitempty"`
	CutBytes  int64 `json:"cut_bytes,omitempty"`
	Cuts      []Cut `json:"cuts,omitempty"`
	// StaticBytes were added from read-only data read before the hold
	// (Insert); they are not in Bytes.
	StaticBytes int64 `json:"static_bytes,omitempty"`
}

// Stats reports the copy so far.
func (c *Copy) Stats() CopyStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CopyStats{Bytes: c.bytes, Ranges: len(c.segs), Calls: c.calls, CutRanges: c.cutN, CutBytes: c.cutB,
		Cuts: append([]Cut(nil), c.cuts...), StaticBytes: c.static}
}

// Image returns the copy made so far as read-only memory. Later copies do
// not change an Image already returned.
func (c *Copy) Image() *Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shared = true
	cuts := append([]Cut(nil), c.cuts...)
	sort.Slice(cuts, func(i, j int) bool { return cuts[i].Addr < cuts[j].Addr })
	return &Image{segs: c.segs, cuts: cuts, bytes: c.bytes + c.static, arena: c.reserved}
}

// Reserve sets aside a buffer of n bytes for the copies to come and
// touches every page of it, so that the kernel maps the pages now — call
// it before the process is held. Writing into fresh pages costs a page
// fault each (on the VMs this was measured on, tens of milliseconds per
// 10 MB), time the process would otherwise spend held. A large reserve is
// preceded by a garbage collection, so that it reuses the pages of the
// last copy, which are mapped already (on those VMs a copy into pages the
// process has used before was 5–10 times faster than into new ones, even
// touched ones) and the heap does not hold two copies: a daemon's peak
// stays near its base plus one copy. n is capped by the byte budget;
// copies beyond the reserve allocate as they go.
func (c *Copy) Reserve(n uint64) {
	if c.r.budget > 0 {
		n = min(n, uint64(c.r.budget))
	}
	if n == 0 || n > 1<<40 {
		return
	}
	if n >= collectFirst {
		runtime.GC()
	}
	buf := make([]byte, n)
	mapPages(buf)
	c.mu.Lock()
	c.spare, c.reserved = buf, buf
	c.mu.Unlock()
}

// Spare returns the whole reserved buffer (as set aside, before copies
// used it), for a caller that keeps it for the next copy once this copy
// and its Images are no longer used.
func (c *Copy) Spare() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reserved
}

// ReserveIn is Reserve with the caller's buffer, whose pages it has used
// before (a buffer kept from the last copy): no allocation, no fault. The
// copy's ranges alias buf, so the caller must not hand it to anyone else
// while this copy or an Image of it is in use.
func (c *Copy) ReserveIn(buf []byte) {
	if c.r.budget > 0 && int64(len(buf)) > c.r.budget {
		buf = buf[:c.r.budget]
	}
	c.mu.Lock()
	c.spare, c.reserved = buf, buf
	c.mu.Unlock()
}

// mapPages maps every page of buf now. A large buffer is first asked for
// transparent huge pages (MADV_HUGEPAGE: where the host's THP mode is
// "madvise", the common default, nothing else gets them), then populated
// in one system call (MADV_POPULATE_WRITE, Linux 5.14) rather than one
// page fault per 4 KiB; either may be refused, and a write per page
// maps what is left. On the measured VMs a first 76 MB reserve took
// 170-270 ms touched page by page, and the copy into those small pages
// was several times slower than into pages used before.
func mapPages(buf []byte) {
	const huge = 2 << 20
	if len(buf) >= 2*huge {
		// The huge-page-aligned interior only: madvise splits the heap's
		// mapping at the range's ends, which must be page-aligned, and
		// a huge page needs an aligned 2 MiB anyway.
		start := uintptr(unsafe.Pointer(&buf[0]))
		lo := (start + huge - 1) &^ (huge - 1)
		hi := (start + uintptr(len(buf))) &^ (huge - 1)
		if hi > lo {
			_ = unix.Madvise(buf[lo-start:hi-start], unix.MADV_HUGEPAGE)
		}
	}
	if len(buf) >= 1<<20 {
		start := uintptr(unsafe.Pointer(&buf[0]))
		lo := (start + 4095) &^ 4095
		hi := (start + uintptr(len(buf))) &^ 4095
		if hi > lo && unix.Madvise(buf[lo-start:hi-start], unix.MADV_POPULATE_WRITE) == nil {
			if lo > start {
				buf[0] = 0
			}
			if end := start + uintptr(len(buf)); end > hi {
				buf[len(buf)-1] = 0
			}
			return
		}
	}
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 0 // a write maps the page
	}
}

// collectFirst is the reserve from which a garbage collection runs first.
const collectFirst = 8 << 20

// buffer returns n bytes for a copy: from the reserve while it lasts.
func (c *Copy) buffer(n uint64) []byte {
	if uint64(len(c.spare)) >= n {
		b := c.spare[:n:n]
		c.spare = c.spare[n:]
		return b
	}
	return make([]byte, n)
}

// Want queues [addr, addr+n) for the next Flush.
func (c *Copy) Want(addr, n uint64) {
	if n == 0 || addr+n < addr {
		return
	}
	c.mu.Lock()
	c.want = append(c.want, span{addr, n})
	c.mu.Unlock()
}

// WantInMapping queues [addr, addr+n) cut short where the readable
// mapping addr lies in ends: for a scan that stops where memory does (a
// thread's stack above its SP, which may be the top of the main thread's
// stack), whose bytes beyond the mapping are not there to be missed, so
// not a cut. The process's mappings are read once per copy (while held: a
// few tens of microseconds); when they cannot be, the range is queued
// whole.
func (c *Copy) WantInMapping(addr, n uint64) {
	if n == 0 || addr+n < addr {
		return
	}
	c.mu.Lock()
	if c.maps == nil {
		c.maps = readMaps(c.r.pid)
	}
	if c.maps != nil {
		n = c.maps.within(addr, n)
	}
	if n > 0 {
		c.want = append(c.want, span{addr, n})
	}
	c.mu.Unlock()
}

// Flush copies every queued range that the copy does not hold yet, as
// few system calls as the kernel allows. Unreadable ranges and ranges
// beyond the byte budget become cuts; Flush fails only when the process
// is gone.
func (c *Copy) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := c.want
	c.want = nil
	return c.copyLocked(want)
}

// image is the copy as it stands, for one look under c.mu (no cuts).
func (c *Copy) image() Image { return Image{segs: c.segs, arena: c.reserved} }

// View returns copied bytes without copying them (see Image.View).
func (c *Copy) View(addr, n uint64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	im := c.image()
	return im.View(addr, n)
}

// ViewUpTo returns, in place, the copied bytes from addr to the end of
// the copied range that holds it, at most n; nil when addr is not copied.
// For reads that may have been cut short where a mapping ends
// (WantInMapping).
func (c *Copy) ViewUpTo(addr, n uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := findSeg(c.segs, addr)
	if i < 0 {
		return nil
	}
	s := c.segs[i]
	o := addr - s.addr
	k := min(uint64(len(s.data))-o, n)
	return s.data[o : o+k : o+k]
}

// Has reports whether [addr, addr+n) is in the copy.
func (c *Copy) Has(addr, n uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	im := c.image()
	return im.Has(addr, n)
}

// ReadAt serves p from the copy, copying the missing part from the
// process first (copy-through).
func (c *Copy) ReadAt(p []byte, addr uint64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	im := c.image()
	if n, err := im.ReadAt(p, addr); err == nil {
		return n, nil
	}
	if err := c.copyLocked([]span{{addr, uint64(len(p))}}); err != nil {
		return 0, err
	}
	im = c.image()
	im.cuts = c.sortedCuts()
	return im.ReadAt(p, addr)
}

// ReadMapped is ReadAt for a guess: the part of [addr, addr+len(p)) that
// lies in the readable mapping addr is in, copied through the copy. A
// guess that points into no mapping (a pointer-shaped integer followed by
// a heap walk) reads nothing and is no cut: no bytes were missed, and no
// system call is spent on it while the process is held. n is what was
// read; n < len(p) with a nil error means the mapping ends there.
func (c *Copy) ReadMapped(p []byte, addr uint64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	if c.maps == nil {
		c.maps = readMaps(c.r.pid)
	}
	n := uint64(len(p))
	if c.maps != nil {
		n = c.maps.within(addr, n)
	}
	c.mu.Unlock()
	if n == 0 {
		return 0, fmt.Errorf("read %#x: %w", addr, ErrUnmapped)
	}
	return c.ReadAt(p[:n], addr)
}

// Insert adds bytes read earlier from memory that does not change while
// the process runs (read-only data such as type descriptors), so that the
// analysis after the release finds them in the image. data is kept, not
// copied.
func (c *Copy) Insert(addr uint64, data []byte) {
	if len(data) == 0 || addr+uint64(len(data)) < addr {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var add []segment
	for _, s := range c.uncovered([]span{{addr, uint64(len(data))}}) {
		o := s.addr - addr
		add = append(add, segment{addr: s.addr, data: data[o : o+s.n : o+s.n]})
		c.static += int64(s.n)
	}
	c.merge(add)
}

func (c *Copy) sortedCuts() []Cut {
	cuts := append([]Cut(nil), c.cuts...)
	sort.Slice(cuts, func(i, j int) bool { return cuts[i].Addr < cuts[j].Addr })
	return cuts
}

func (c *Copy) cut(addr, n uint64, bound bool, reason string) {
	c.cutN++
	c.cutB += int64(n)
	if len(c.cuts) < maxCuts {
		c.cuts = append(c.cuts, Cut{Addr: addr, Len: n, Bound: bound, Reason: reason})
	}
}

// uncovered returns the parts of spans (in their order) that the copy
// does not hold yet.
func (c *Copy) uncovered(spans []span) []span {
	var out []span
	for _, s := range spans {
		at, end := s.addr, s.addr+s.n
		i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].end() > at })
		for at < end {
			if i >= len(c.segs) || c.segs[i].addr >= end {
				out = append(out, span{at, end - at})
				break
			}
			g := c.segs[i]
			if g.addr > at {
				out = append(out, span{at, g.addr - at})
			}
			at = max(at, g.end())
			i++
		}
	}
	return out
}

// sortSpans sorts spans by address: a radix sort for many (a goroutine
// copy asks for ~10,000 stacks at once; a comparison sort of them was
// milliseconds of the freeze), pdqsort for few.
func sortSpans(spans []span) {
	if len(spans) < 512 {
		slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.addr, b.addr) })
		return
	}
	tmp := make([]span, len(spans))
	src, dst := spans, tmp
	for shift := uint(0); shift < 64; shift += 8 {
		var count [257]int
		same := true
		first := byte(src[0].addr >> shift)
		for _, s := range src {
			b := byte(s.addr >> shift)
			count[int(b)+1]++
			same = same && b == first
		}
		if same {
			continue // every address has this byte: nothing to move
		}
		for i := 1; i < 257; i++ {
			count[i] += count[i-1]
		}
		for _, s := range src {
			b := byte(s.addr >> shift)
			dst[count[b]] = s
			count[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &spans[0] {
		copy(spans, src)
	}
}

// mergeSorted merges, in place, spans sorted by address that overlap or
// touch.
func mergeSorted(spans []span) []span {
	merged := spans[:0]
	for _, s := range spans {
		if k := len(merged) - 1; k >= 0 && s.addr <= merged[k].addr+merged[k].n {
			merged[k].n = max(merged[k].n, s.addr+s.n-merged[k].addr)
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// uncoveredSorted is uncovered for disjoint spans sorted by address, in
// one sweep along the copy's ranges; the result is disjoint and sorted.
func (c *Copy) uncoveredSorted(spans []span) []span {
	if len(c.segs) == 0 || len(spans) == 0 {
		return spans
	}
	out := make([]span, 0, len(spans))
	i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].end() > spans[0].addr })
	for _, s := range spans {
		at, end := s.addr, s.addr+s.n
		for i < len(c.segs) && c.segs[i].end() <= at {
			i++
		}
		for j := i; at < end; j++ {
			if j >= len(c.segs) || c.segs[j].addr >= end {
				out = append(out, span{at, end - at})
				break
			}
			g := c.segs[j]
			if g.addr > at {
				out = append(out, span{at, g.addr - at})
			}
			at = max(at, g.end())
		}
	}
	return out
}

// copyLocked copies spans (priority order) from the process.
func (c *Copy) copyLocked(spans []span) error {
	var asked uint64
	for _, s := range spans {
		asked += s.n
	}
	room := uint64(1<<63 - 1)
	if c.r.budget > 0 {
		room = uint64(max(c.r.budget-c.r.bytes.Load(), 0))
	}
	if asked > room {
		// The budget goes to the ranges in the order they were asked for.
		spans = c.uncovered(spans)
		kept := spans[:0]
		for _, s := range spans {
			take := min(room, s.n)
			room -= take
			if take < s.n {
				c.cut(s.addr+take, s.n-take, true, fmt.Sprintf("the copy's bound of %d bytes (capture.max_bytes) was reached", c.r.budget))
			}
			if take > 0 {
				kept = append(kept, span{s.addr, take})
			}
		}
		spans = kept
		sortSpans(spans)
	} else {
		// Everything fits: sorted and merged first (disjoint), the copy's
		// ranges are taken out in one sweep, which keeps them sorted.
		sortSpans(spans)
		spans = c.uncoveredSorted(mergeSorted(spans))
	}
	if len(spans) == 0 {
		return nil
	}
	merged := mergeSorted(spans)
	runs := c.runs(merged)
	// The runs that fit go into the reserve, the rest into a new buffer:
	// a reserve that falls a little short still saves most page faults.
	k, used := 0, uint64(0)
	for k < len(runs) && used+runs[k].n <= uint64(len(c.spare)) {
		used += runs[k].n
		k++
	}
	var retry []span
	for _, part := range [][]run{runs[:k], runs[k:]} {
		again, err := c.readRuns(part, merged, true)
		retry = append(retry, again...)
		if err != nil {
			return err
		}
	}
	if len(retry) == 0 {
		return nil
	}
	// Ranges after a failure inside a run, each on its own.
	runs = make([]run, 0, len(retry))
	for i, s := range retry {
		runs = append(runs, run{addr: s.addr, n: s.n, first: i, last: i + 1})
	}
	_, err := c.readRuns(runs, retry, false)
	return err
}

// mergeGap is the largest gap between two ranges read as one: a range
// costs the kernel about as much as copying a kilobyte, and a gap smaller
// than a page lies in the pages of the ranges around it, so it is as
// readable as they are.
const mergeGap = 1024

// run is ranges [first, last) of a sorted list read as one range.
type run struct {
	addr, n     uint64
	first, last int
}

// runs groups sorted, disjoint spans whose gaps are at most mergeGap,
// while the bytes of the gaps still fit the budget and the copy holds
// none of them (its ranges stay disjoint).
func (c *Copy) runs(spans []span) []run {
	room := uint64(1<<63 - 1)
	if c.r.budget > 0 {
		room = uint64(max(c.r.budget-c.r.bytes.Load(), 0))
	}
	var total uint64
	for _, s := range spans {
		total += s.n
	}
	out := make([]run, 0, len(spans))
	for i, s := range spans {
		if k := len(out) - 1; k >= 0 {
			r := &out[k]
			end := r.addr + r.n
			gap := s.addr - end
			if gap <= mergeGap && total+gap <= room && !c.holds(end, s.addr) {
				total += gap
				r.n = s.addr + s.n - r.addr
				r.last = i + 1
				continue
			}
		}
		out = append(out, run{addr: s.addr, n: s.n, first: i, last: i + 1})
	}
	return out
}

// holds reports whether the copy has any byte of [from, to).
func (c *Copy) holds(from, to uint64) bool {
	if from >= to {
		return false
	}
	i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].end() > from })
	return i < len(c.segs) && c.segs[i].addr < to
}

// readRuns copies runs (of spans) into one new buffer, iovMax runs per
// process_vm_readv, and adds what was read to the copy. Where the kernel
// stops inside a run, the rest of the range it stopped in is cut; with
// retry the ranges after it are returned to be read on their own, else
// they are cut too. A large copy is split across goroutines, each with
// its own system calls into its own part of the buffer: the kernel copies
// on as many CPUs (measured: ~1 us of kernel time per range, and ~10 ms
// per 70 MB).
func (c *Copy) readRuns(runs []run, spans []span, retry bool) ([]span, error) {
	var total uint64
	for _, r := range runs {
		total += r.n
	}
	if total == 0 {
		return nil, nil
	}
	arena := c.buffer(total)
	if c.noVM {
		return nil, c.pread(runs, arena)
	}
	// Parts of whole system calls (iovMax runs), so that splitting adds
	// no call; a copy of few large runs splits by bytes instead.
	batches := (len(runs) + iovMax - 1) / iovMax
	k := copyWorkers(len(runs), total)
	parts := make([]part, k)
	var wg sync.WaitGroup
	from, off := 0, uint64(0)
	for j := range parts {
		to := min(len(runs), batches*(j+1)/k*iovMax)
		if batches < k {
			to = len(runs) * (j + 1) / k
		}
		if j == k-1 {
			to = len(runs)
		}
		var n uint64
		for _, r := range runs[from:to] {
			n += r.n
		}
		p := &parts[j]
		p.runs, p.arena, p.maps = runs[from:to], arena[off:off+n], c.maps
		p.spans, p.retry = spans, retry
		from, off = to, off+n
		if j == k-1 {
			c.readPart(p) // the last part on this goroutine
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.readPart(p)
		}()
	}
	wg.Wait()
	var again []span
	var err error
	for j := range parts {
		p := &parts[j]
		c.add(p.segs)
		c.calls += p.calls
		for _, cut := range p.cuts {
			c.cut(cut.Addr, cut.Len, cut.Bound, cut.Reason)
		}
		again = append(again, p.again...)
		if c.maps == nil && p.maps != nil {
			c.maps = p.maps
		}
		if p.noVM {
			// Refused (seccomp, an old kernel): /proc/PID/mem reads
			// what ptrace access allows.
			c.noVM = true
			if perr := c.pread(p.runs, p.arena); err == nil {
				err = perr
			}
		}
		if err == nil {
			err = p.err
		}
	}
	return again, err
}

// maxCopyWorkers bounds the goroutines of one copy.
const maxCopyWorkers = 4

// copyWorkers is how many goroutines copy runs (total bytes): one for a
// copy of up to two system calls and 16 MB.
func copyWorkers(runs int, total uint64) int {
	if runs <= 2*iovMax && total <= 16<<20 {
		return 1
	}
	return max(1, min(runtime.GOMAXPROCS(0), maxCopyWorkers, (runs+iovMax-1)/iovMax+int(total>>24)))
}

// part is one goroutine's share of readRuns: what it read, cut and left
// to retry, merged into the copy after every part is done.
type part struct {
	runs  []run
	arena []byte
	maps  *mappings
	spans []span // the spans runs index: what is cut or retried in a failed run
	retry bool   // a span after the failure in a run is retried, not cut
	segs  []segment
	cuts  []Cut
	again []span
	calls int64
	noVM  bool // process_vm_readv refused: runs, arena are left to pread
	err   error
}

// readPart copies p.runs into p.arena, up to iovMax runs per
// process_vm_readv. A run outside the readable mappings (known once a
// read failed) costs no system call; where the kernel stops inside a run,
// the rest of the batch is left to the next call.
func (c *Copy) readPart(p *part) {
	runs, arena := p.runs, p.arena
	p.segs = make([]segment, 0, len(runs))
	remote := make([]unix.RemoteIovec, 0, min(len(runs), iovMax))
	off := uint64(0)
	for len(runs) > 0 {
		// Once a copy met unreadable memory, ranges outside the
		// process's readable mappings are cut without a system call:
		// hostile or stale pointers must not cost one each.
		if p.maps != nil && !p.maps.holds(runs[0].addr, runs[0].n) {
			p.unmapped(runs[0])
			off += runs[0].n
			runs = runs[1:]
			continue
		}
		batch := runs[:p.batchLen(runs)]
		n, err := c.readv(p, batch, arena[off:], remote)
		if p.err != nil {
			return
		}
		if p.noVM {
			p.runs, p.arena = runs, arena[off:]
			return
		}
		got := uint64(n)
		i := 0
		for ; i < len(batch) && got >= batch[i].n; i++ {
			p.segs = append(p.segs, segment{addr: batch[i].addr, data: arena[off : off+batch[i].n : off+batch[i].n]})
			got -= batch[i].n
			off += batch[i].n
		}
		if i == len(batch) {
			runs = runs[i:]
			continue
		}
		c.stoppedIn(p, batch[i], arena[off:off+got:off+got], err)
		off += batch[i].n
		runs = runs[i+1:]
	}
	p.runs = nil
}

// unmapped cuts the spans of run r that lie outside the readable
// mappings, and (with retry) leaves the others to be read on their own.
func (p *part) unmapped(r run) {
	for _, s := range p.spans[r.first:r.last] {
		if !p.maps.holds(s.addr, s.n) {
			p.cuts = append(p.cuts, Cut{Addr: s.addr, Len: s.n, Reason: "unreadable: not in a readable mapping"})
		} else if p.retry {
			p.again = append(p.again, s)
		}
	}
}

// batchLen is how many of runs (at least one) go into one system call:
// up to iovMax, and, once the mappings are known, only up to the next
// run outside them.
func (p *part) batchLen(runs []run) int {
	k := 1
	for k < min(len(runs), iovMax) && (p.maps == nil || p.maps.holds(runs[k].addr, runs[k].n)) {
		k++
	}
	return k
}

// readv copies batch with one process_vm_readv into local, their bytes
// end to end (remote is the iovec buffer, reused). A process that is gone
// sets p.err; a refused call (seccomp, an old kernel) sets p.noVM, for
// /proc/PID/mem to read the rest; any other error is a read of nothing,
// the first run's failure.
func (c *Copy) readv(p *part, batch []run, local []byte, remote []unix.RemoteIovec) (int, error) {
	remote = remote[:0]
	var want uint64
	for _, r := range batch {
		remote = append(remote, unix.RemoteIovec{Base: uintptr(r.addr), Len: int(r.n)})
		want += r.n
	}
	iov := []unix.Iovec{{Base: &local[0]}}
	iov[0].SetLen(int(want))
	n, err := unix.ProcessVMReadv(c.r.pid, iov, remote, 0)
	p.calls++
	c.r.calls.Add(1)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ESRCH):
			p.err = fmt.Errorf("copy memory of pid %d: %w", c.r.pid, ErrGone)
			return 0, err
		case errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.EPERM):
			p.noVM = true
			return 0, err
		}
		n = 0
	}
	c.r.bytes.Add(int64(n))
	return n, err
}

// stoppedIn records run r, which the kernel stopped inside after the
// bytes of got: they are kept, the rest of the span the failure falls in
// is cut, and the spans after it are retried on their own (with retry)
// or cut. The mappings are read now, so that the runs still to come that
// lie outside them cost no system call.
func (c *Copy) stoppedIn(p *part, r run, got []byte, err error) {
	if p.maps == nil {
		p.maps = readMaps(c.r.pid)
	}
	if len(got) > 0 {
		p.segs = append(p.segs, segment{addr: r.addr, data: got})
	}
	reason := "unreadable"
	if err != nil {
		reason = "unreadable: " + err.Error()
	}
	fail := r.addr + uint64(len(got))
	for _, s := range p.spans[r.first:r.last] {
		switch {
		case s.addr+s.n <= fail:
		case s.addr <= fail:
			p.cuts = append(p.cuts, Cut{Addr: fail, Len: s.addr + s.n - fail, Reason: reason})
		case p.retry:
			p.again = append(p.again, s)
		default:
			p.cuts = append(p.cuts, Cut{Addr: s.addr, Len: s.n, Reason: reason})
		}
	}
}

// pread copies runs one by one from /proc/PID/mem.
func (c *Copy) pread(runs []run, arena []byte) error {
	var segs []segment
	defer func() { c.add(segs) }()
	off := uint64(0)
	for _, r := range runs {
		buf := arena[off : off+r.n : off+r.n]
		off += r.n
		n, err := c.r.f.ReadAt(buf, int64(r.addr))
		c.calls++
		c.r.calls.Add(1)
		c.r.bytes.Add(int64(n))
		if n > 0 {
			segs = append(segs, segment{addr: r.addr, data: buf[:n:n]})
		}
		if err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("copy memory of pid %d: %w", c.r.pid, ErrGone)
			}
			c.cut(r.addr+uint64(n), r.n-uint64(n), false, "unreadable: "+err.Error())
		}
	}
	return nil
}

// add merges copied segments and counts their bytes.
func (c *Copy) add(segs []segment) {
	for _, s := range segs {
		c.bytes += int64(len(s.data))
	}
	c.merge(segs)
}

// merge adds disjoint new segments (not overlapping the copy) in order.
func (c *Copy) merge(add []segment) {
	if len(add) == 0 {
		return
	}
	slices.SortFunc(add, func(a, b segment) int { return cmp.Compare(a.addr, b.addr) })
	if c.shared || len(add) > 8 {
		out := make([]segment, 0, len(c.segs)+len(add))
		i, j := 0, 0
		for i < len(c.segs) || j < len(add) {
			if j >= len(add) || (i < len(c.segs) && c.segs[i].addr < add[j].addr) {
				out = append(out, c.segs[i])
				i++
			} else {
				out = append(out, add[j])
				j++
			}
		}
		c.segs, c.shared = out, false
		return
	}
	for _, s := range add {
		i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].addr > s.addr })
		c.segs = slices.Insert(c.segs, i, s)
	}
}
