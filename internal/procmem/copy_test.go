package procmem

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These tests copy from the test process itself: process_vm_readv and
// /proc/self/mem read our own memory like another process's.

func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

func openSelf(t *testing.T, budget int64) *Reader {
	t.Helper()
	r, err := Open(os.Getpid(), budget)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// pattern returns n bytes of a pattern on the heap (a small slice that
// does not escape could live on the goroutine stack, which moves).
func pattern(n int) []byte {
	b := make([]byte, max(n, 128<<10))[:n]
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestCopyBatchesManyRanges(t *testing.T) {
	const n, size, stride = 3000, 100, 8192 // gaps too wide to merge
	src := pattern(n * stride)
	base := addrOf(src)
	c := openSelf(t, 0).Copy()
	for i := 0; i < n; i++ {
		c.Want(base+uint64(i*stride), size)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Calls != 3 || st.Ranges != n || st.Bytes != n*size || st.CutRanges != 0 {
		t.Fatalf("stats %+v: want 3 calls (1024 ranges each), %d ranges, %d bytes", st, n, n*size)
	}
	im := c.Image()
	buf := make([]byte, size)
	for i := 0; i < n; i += 97 {
		if _, err := im.ReadAt(buf, base+uint64(i*stride)); err != nil || !bytes.Equal(buf, src[i*stride:i*stride+size]) {
			t.Fatalf("range %d: %v", i, err)
		}
	}
	// One byte past a range: never a silent zero.
	if _, err := im.ReadAt(buf, base+uint64(size)-50); !errors.Is(err, ErrNotCopied) {
		t.Fatalf("read across the end of a range: %v, want ErrNotCopied", err)
	}
	if v, ok := im.View(base+stride, size); !ok || !bytes.Equal(v, src[stride:stride+size]) {
		t.Fatal("view of a copied range")
	}
	runtime.KeepAlive(src)
}

func TestCopyMergesSmallGaps(t *testing.T) {
	src := pattern(64 << 10)
	base := addrOf(src)
	c := openSelf(t, 0).Copy()
	for off := 0; off+300 <= len(src); off += 600 { // 300-byte gaps
		c.Want(base+uint64(off), 300)
	}
	c.Want(base+10, 20) // inside a range already asked for
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Calls != 1 || st.Ranges != 1 {
		t.Fatalf("stats %+v: want one range read by one call", st)
	}
	// The gaps came along: a read spanning range, gap and range works.
	got := make([]byte, 1000)
	if _, err := c.Image().ReadAt(got, base+100); err != nil || !bytes.Equal(got, src[100:1100]) {
		t.Fatalf("read across a merged gap: %v", err)
	}
	runtime.KeepAlive(src)
}

// mapped returns three pages whose middle one cannot be read (PROT_NONE:
// an unmapped page could be mapped again by the runtime meanwhile).
func mapped(t *testing.T) (mem []byte, page int) {
	t.Helper()
	page = os.Getpagesize()
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(3*page), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	m := unsafe.Slice((*byte)(p), 3*page)
	copy(m, pattern(3*page))
	if err := unix.Mprotect(m[page:2*page], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.MunmapPtr(unsafe.Pointer(&m[0]), uintptr(3*page)) })
	return m, page
}

func TestCopyUnreadableIsCutNotZero(t *testing.T) {
	m, page := mapped(t)
	base := addrOf(m)
	p1 := base + uint64(page)
	c := openSelf(t, 0).Copy()
	c.Want(p1-500, 400)             // readable, merged with the next
	c.Want(p1, 100)                 // unmapped
	c.Want(p1+200, 100)             // unmapped, after the failure in the same run
	c.Want(p1+uint64(page)+16, 200) // readable, its own run
	c.Want(p1-50, 100)              // straddles into the hole
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	im := c.Image()
	buf := make([]byte, 400)
	if _, err := im.ReadAt(buf, p1-500); err != nil || !bytes.Equal(buf, m[page-500:page-100]) {
		t.Fatalf("readable range before the hole: %v", err)
	}
	if _, err := im.ReadAt(buf[:200], p1+uint64(page)+16); err != nil || !bytes.Equal(buf[:200], m[2*page+16:2*page+216]) {
		t.Fatalf("readable range after the hole: %v", err)
	}
	for _, a := range []uint64{p1, p1 + 200} {
		_, err := im.ReadAt(buf[:100], a)
		var ce *CutError
		if !errors.As(err, &ce) || ce.Truncated() || !errors.Is(err, ErrNotCopied) {
			t.Fatalf("read of unmapped %#x: %v, want an unreadable cut", a, err)
		}
	}
	if _, err := im.ReadAt(buf[:50], p1-50); err != nil {
		t.Fatalf("readable part of a straddling range: %v", err)
	}
	if st := c.Stats(); st.CutRanges < 2 {
		t.Fatalf("stats %+v: want the unmapped ranges cut", st)
	}
}

func TestCopyWantInMappingStopsWhereMemoryDoes(t *testing.T) {
	m, page := mapped(t)
	p1 := addrOf(m) + uint64(page)
	// A scan from 300 bytes below the hole: what lies past the mapping is
	// not copied and not a cut; the same range by Want is one.
	c := openSelf(t, 0).Copy()
	c.WantInMapping(p1-300, uint64(2*page))
	c.WantInMapping(p1+10, 100) // in no readable mapping: nothing queued
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.CutRanges != 0 || st.Bytes != 300 {
		t.Fatalf("stats %+v: want the 300 readable bytes and no cut", st)
	}
	buf := make([]byte, 300)
	if _, err := c.Image().ReadAt(buf, p1-300); err != nil || !bytes.Equal(buf, m[page-300:page]) {
		t.Fatalf("the part in the mapping: %v", err)
	}
	w := openSelf(t, 0).Copy()
	w.Want(p1-300, uint64(2*page))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.CutRanges != 1 {
		t.Fatalf("Want of the same range: stats %+v, want it cut", st)
	}
}

// TestCopyReadMappedGuessesCostNothing: a heap walk's guesses that point
// into nothing (0, small integers, the hole in a mapping) read nothing,
// cost no system call and are no cut; one near the end of a mapping reads
// up to it.
func TestCopyReadMappedGuessesCostNothing(t *testing.T) {
	m, page := mapped(t)
	p1 := addrOf(m) + uint64(page)
	c := openSelf(t, 0).Copy()
	buf := make([]byte, 256)
	for _, a := range []uint64{0, 8, 0x1000, p1 + 10} {
		if n, err := c.ReadMapped(buf, a); n != 0 || !errors.Is(err, ErrUnmapped) {
			t.Errorf("ReadMapped(%#x) = %d, %v; want 0, ErrUnmapped", a, n, err)
		}
	}
	if st := c.Stats(); st.CutRanges != 0 || st.Calls != 0 {
		t.Fatalf("stats %+v after guesses into nothing: want no cut and no call", st)
	}
	n, err := c.ReadMapped(buf, p1-100)
	if err != nil || n != 100 || !bytes.Equal(buf[:n], m[page-100:page]) {
		t.Fatalf("ReadMapped 100 bytes below the hole = %d, %v; want the 100 bytes", n, err)
	}
	if st := c.Stats(); st.CutRanges != 0 {
		t.Fatalf("stats %+v: want no cut", st)
	}
}

func TestCopyBudgetCutsAndSays(t *testing.T) {
	src := pattern(1 << 20)
	base := addrOf(src)
	c := openSelf(t, 1000).Copy()
	c.Want(base, 600)
	c.Want(base+100000, 600) // only 400 bytes of budget left
	c.Want(base+200000, 600) // none left
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	im := c.Image()
	buf := make([]byte, 600)
	if _, err := im.ReadAt(buf, base); err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadAt(buf[:400], base+100000); err != nil {
		t.Fatalf("the part within the budget: %v", err)
	}
	for _, a := range []uint64{base + 100400, base + 200000} {
		_, err := im.ReadAt(buf[:100], a)
		var ce *CutError
		if !errors.As(err, &ce) || !ce.Truncated() || !errors.Is(err, ErrBudget) {
			t.Fatalf("read beyond the budget at %#x: %v, want a bound cut", a, err)
		}
	}
	st := c.Stats()
	if st.Bytes != 1000 || st.CutBytes != 800 || st.CutRanges != 2 {
		t.Fatalf("stats %+v", st)
	}
	runtime.KeepAlive(src)
}

func TestCopyThroughAndImmutableImage(t *testing.T) {
	src := pattern(1 << 16)
	base := addrOf(src)
	c := openSelf(t, 0).Copy()
	buf := make([]byte, 64)
	if _, err := c.ReadAt(buf, base+8); err != nil || !bytes.Equal(buf, src[8:72]) {
		t.Fatalf("copy-through read: %v", err)
	}
	before := c.Image()
	if _, err := c.ReadAt(buf, base+8); err != nil || c.Stats().Calls != 1 {
		t.Fatalf("second read: %v, %d calls; want it served from the copy", err, c.Stats().Calls)
	}
	c.Want(base+40000, 64)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil { // nothing queued, a copy already made
		t.Fatal(err)
	}
	if before.Has(base+40000, 64) || !c.Image().Has(base+40000, 64) {
		t.Fatal("an image taken earlier changed, or the new one misses the range")
	}
	static := []byte("read-only data read before the hold")
	c.Insert(0x1000, static)
	if v, ok := c.Image().View(0x1000, uint64(len(static))); !ok || string(v) != string(static) {
		t.Fatal("inserted bytes not in the image")
	}
	runtime.KeepAlive(src)
}

func TestCopyUnmappedRangesCostNoCalls(t *testing.T) {
	src := pattern(4096)
	// A hole nothing else can map meanwhile: 24 MB mapped PROT_NONE.
	hole, err := unix.MmapPtr(-1, 0, nil, 3000*8192, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.MunmapPtr(hole, 3000*8192) })
	c := openSelf(t, 0).Copy()
	for i := 0; i < 3000; i++ {
		c.Want(uint64(uintptr(hole))+uint64(i)*8192, 64)
	}
	c.Want(addrOf(src), 4096)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.CutRanges != 3000 || st.Calls > 3 {
		t.Fatalf("stats %+v: want 3000 ranges cut in at most 3 system calls", st)
	}
	if !c.Image().Has(addrOf(src), 4096) {
		t.Fatal("the mapped range was not copied")
	}
	runtime.KeepAlive(src)
}

func TestParseMaps(t *testing.T) {
	m := parseMaps([]byte(`00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/x
00452000-00453000 rw-p 00052000 08:02 173521 /usr/bin/x
00600000-00601000 ---p 00000000 00:00 0
7ffd000-7fff000 rw-p 00000000 00:00 0 [stack]
garbage
`))
	for _, tc := range []struct {
		addr, n uint64
		want    bool
	}{
		{0x400000, 0x53000, true}, // two adjacent readable mappings
		{0x452ff0, 0x20, false},   // runs past the end
		{0x600000, 8, false},      // not readable
		{0x7ffe000, 0x1000, true},
		{0x100, 8, false},
	} {
		if got := m.holds(tc.addr, tc.n); got != tc.want {
			t.Errorf("holds(%#x, %#x) = %v, want %v", tc.addr, tc.n, got, tc.want)
		}
	}
}

func TestCopyReserveShortOfTheCopy(t *testing.T) {
	src := pattern(1 << 16)
	base := addrOf(src)
	c := openSelf(t, 0).Copy()
	c.Reserve(100)
	for _, off := range []uint64{0, 20000, 40000} {
		c.Want(base+off, 80)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	im := c.Image()
	buf := make([]byte, 80)
	for _, off := range []uint64{0, 20000, 40000} {
		if _, err := im.ReadAt(buf, base+off); err != nil || !bytes.Equal(buf, src[off:off+80]) {
			t.Fatalf("range at %d: %v", off, err)
		}
	}
	runtime.KeepAlive(src)
}

func TestSortSpans(t *testing.T) {
	rng := uint64(88172645463325252)
	for _, n := range []int{0, 3, 511, 512, 5000} {
		spans := make([]span, n)
		for i := range spans {
			rng ^= rng << 13
			rng ^= rng >> 7
			rng ^= rng << 17
			spans[i] = span{addr: rng &^ 0xff00, n: uint64(i)} // a byte alike in every address too
		}
		sortSpans(spans)
		for i := 1; i < n; i++ {
			if spans[i-1].addr > spans[i].addr {
				t.Fatalf("n=%d: not sorted at %d: %#x > %#x", n, i, spans[i-1].addr, spans[i].addr)
			}
		}
	}
}

// TestCopyRandomized copies random, overlapping ranges of memory with
// unreadable pages among it, under random budgets and reserves, in
// several flushes with copy-through reads between: nothing may panic, and
// every byte the image answers with must be the memory's.
func TestCopyRandomized(t *testing.T) {
	page := os.Getpagesize()
	const pages = 64
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(pages*page), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.MunmapPtr(p, uintptr(pages*page)) })
	m := unsafe.Slice((*byte)(p), pages*page)
	copy(m, pattern(len(m)))
	want := append([]byte(nil), m...)
	rng := uint64(0x9e3779b97f4a7c15)
	next := func(n int) int {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	for i := 0; i < pages; i += 1 + next(6) {
		if err := unix.Mprotect(m[i*page:(i+1)*page], unix.PROT_NONE); err != nil {
			t.Fatal(err)
		}
	}
	base := addrOf(m)
	check := func(im *Image, off, n int) {
		got := make([]byte, n)
		if _, err := im.ReadAt(got, base+uint64(off)); err == nil && !bytes.Equal(got, want[off:off+n]) {
			t.Fatalf("image bytes at +%d differ from the memory's", off)
		}
	}
	for iter := 0; iter < 300; iter++ {
		r := openSelf(t, int64(next(3))*int64(next(200000)))
		c := r.Copy()
		if next(2) == 0 {
			c.Reserve(uint64(next(100000)))
		}
		for f := 0; f < 1+next(4); f++ {
			var asked [][2]int
			for w := 0; w < next(3000); w++ {
				off, n := next(pages*page-3*page), 1+next(3*page)
				c.Want(base+uint64(off), uint64(n))
				asked = append(asked, [2]int{off, n})
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			im := c.Image()
			for _, a := range asked[:min(len(asked), 50)] {
				check(im, a[0], a[1])
			}
			off := next(pages*page - 100)
			buf := make([]byte, 100)
			if _, err := c.ReadAt(buf, base+uint64(off)); err == nil && !bytes.Equal(buf, want[off:off+100]) {
				t.Fatalf("copy-through bytes at +%d differ", off)
			}
		}
	}
}

// A range copied in two flushes (a prefix first, then the rest) into the
// reserve is viewed as one, in place: no megabytes copied to join them.
// Ranges adjacent in the process but not in the reserve are not joined.
func TestCopyViewJoinsAdjacentRangesInTheReserve(t *testing.T) {
	src := pattern(1 << 20)
	a := addrOf(src)
	c := openSelf(t, 0).Copy()
	c.Reserve(2 << 20)
	reserve := c.Spare()
	c.Want(a, 256<<10)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.Want(a, 1<<20) // only the rest is read
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	v, ok := c.View(a, 1<<20)
	if !ok || !bytes.Equal(v, src) {
		t.Fatalf("View of the whole range: %v (equal %v)", ok, ok && bytes.Equal(v, src))
	}
	if p := uintptr(unsafe.Pointer(&v[0])); p < uintptr(unsafe.Pointer(&reserve[0])) || p >= uintptr(unsafe.Pointer(&reserve[0]))+uintptr(len(reserve)) {
		t.Error("the joined view is not in the reserve: copied")
	}
	if im := c.Image(); true {
		if w, ok := im.View(a+100, 512<<10); !ok || !bytes.Equal(w, src[100:100+512<<10]) {
			t.Error("the Image's view across the two ranges differs")
		}
	}

	// Without a reserve the two reads are separate buffers: not joined
	// (a view that large is not assembled by copying either).
	c2 := openSelf(t, 0).Copy()
	c2.Want(a, 256<<10)
	_ = c2.Flush()
	c2.Want(a, 1<<20)
	_ = c2.Flush()
	if _, ok := c2.View(a, 1<<20); ok {
		t.Error("ranges in separate buffers were viewed as one")
	}
}
