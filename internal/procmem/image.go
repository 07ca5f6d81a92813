package procmem

import (
	"errors"
	"fmt"
	"sort"
	"unsafe"
)

// ErrNotCopied is returned by an Image for bytes that are not in the copy:
// analysis after the release asked for memory the held phase did not copy.
// It is never answered with zeros.
var ErrNotCopied = errors.New("not in the copy")

// Cut is a range the copy left out, and why: the copy's size bound was
// reached (Bound), or the memory could not be read when it was copied.
type Cut struct {
	Addr   uint64 `json:"addr"`
	Len    uint64 `json:"len"`
	Bound  bool   `json:"bound,omitempty"`
	Reason string `json:"reason"`
}

// CutError is a read of bytes the copy left out. Truncated reports a cut
// made on purpose (the size bound), which decoders report as truncation,
// not as unreadable memory.
type CutError struct {
	Addr uint64 // the first byte asked for that is not in the copy
	Cut  Cut
}

func (e *CutError) Error() string {
	return fmt.Sprintf("%#x: %s (%d bytes at %#x left out of the copy)", e.Addr, e.Cut.Reason, e.Cut.Len, e.Cut.Addr)
}

// Truncated reports whether the bytes were left out by the size bound.
func (e *CutError) Truncated() bool { return e.Cut.Bound }

// Is makes a CutError match ErrNotCopied, and ErrBudget when it was the
// size bound.
func (e *CutError) Is(target error) bool {
	return target == ErrNotCopied || (e.Cut.Bound && target == ErrBudget)
}

// segment is one copied range.
type segment struct {
	addr uint64
	data []byte
}

func (s segment) end() uint64 { return s.addr + uint64(len(s.data)) }

// Image is a copy of parts of a process's memory, taken while the process
// was held. It implements the same ReadAt as Reader, so the decoders run
// on it unchanged after the release; a read that leaves the copy fails
// with ErrNotCopied (a CutError when the copy said why it left it out).
// An Image is immutable and safe for concurrent use.
type Image struct {
	segs  []segment // sorted by addr, disjoint
	cuts  []Cut     // sorted by addr
	bytes int64
	// arena is the copy's reserve (Copy.Reserve): ranges copied one
	// after the other into it that are adjacent in the process too are
	// viewed as one, in place (joined).
	arena []byte
}

// Bytes is how many bytes the image holds.
func (im *Image) Bytes() int64 { return im.bytes }

// Ranges is how many disjoint ranges the image holds.
func (im *Image) Ranges() int { return len(im.segs) }

// Cuts lists what the copy left out (at most maxCuts, first in address
// order).
func (im *Image) Cuts() []Cut { return append([]Cut(nil), im.cuts...) }

// find returns the index of the segment holding addr, or -1.
func findSeg(segs []segment, addr uint64) int {
	i := sort.Search(len(segs), func(i int) bool { return segs[i].end() > addr })
	if i < len(segs) && segs[i].addr <= addr {
		return i
	}
	return -1
}

// View returns the copied bytes [addr, addr+n): in place when they lie in
// one copied range, else — a few bytes in ranges copied separately but
// adjacent, such as a bucket split by an earlier small read — a copy of
// them. Callers must not modify them. A larger span across ranges is not
// viewed (a decoder then reads it into its own reused buffer): joining
// tens of megabytes would double the memory of a copy.
func (im *Image) View(addr, n uint64) ([]byte, bool) {
	if n == 0 || addr+n < addr {
		return nil, false
	}
	i := findSeg(im.segs, addr)
	if i < 0 {
		return nil, false
	}
	s := im.segs[i]
	if addr+n <= s.end() {
		o := addr - s.addr
		return s.data[o : o+n : o+n], true
	}
	if b, ok := im.joined(i, addr, n); ok {
		return b, true
	}
	if n > maxViewCopy || !im.Has(addr, n) {
		return nil, false
	}
	b := make([]byte, n)
	if _, err := im.fill(b, addr, n); err != nil {
		return nil, false
	}
	return b, true
}

// joined returns [addr, addr+n) in place when it runs over segments i,
// i+1, ... that are adjacent both in the process and in the arena (a
// range copied in two flushes, e.g. a bucket array's prefix read first
// for type inference, then the rest): no copy of megabytes to join them.
func (im *Image) joined(i int, addr, n uint64) ([]byte, bool) {
	if len(im.arena) == 0 {
		return nil, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(im.arena)))
	inArena := func(d []byte) (uint64, bool) {
		p := uintptr(unsafe.Pointer(unsafe.SliceData(d)))
		if len(d) == 0 || p < base || p-base+uintptr(len(d)) > uintptr(len(im.arena)) {
			return 0, false
		}
		return uint64(p - base), true
	}
	start, ok := inArena(im.segs[i].data)
	if !ok {
		return nil, false
	}
	off := start + (addr - im.segs[i].addr)
	for j := i; ; j++ {
		s := im.segs[j]
		if addr+n <= s.end() {
			return im.arena[off : off+n : off+n], true
		}
		if j+1 >= len(im.segs) || im.segs[j+1].addr != s.end() {
			return nil, false
		}
		o, ok := inArena(im.segs[j+1].data)
		if !ok || o != start+(s.end()-im.segs[i].addr) {
			return nil, false
		}
	}
}

// maxViewCopy bounds what View copies to join adjacent ranges.
const maxViewCopy = 64 << 10

// Has reports whether [addr, addr+n) is entirely in the copy.
func (im *Image) Has(addr, n uint64) bool {
	_, err := im.fill(nil, addr, n)
	return err == nil
}

// ReadAt fills p from the copy. A read that is not entirely in the copy
// copies what is and returns an error.
func (im *Image) ReadAt(p []byte, addr uint64) (int, error) {
	return im.fill(p, addr, uint64(len(p)))
}

// fill copies [addr, addr+n) into p (p nil: only checks) across
// consecutive ranges.
func (im *Image) fill(p []byte, addr, n uint64) (int, error) {
	if n == 0 {
		return 0, nil
	}
	if addr+n < addr {
		return 0, fmt.Errorf("read %d bytes at %#x: address wraps", n, addr)
	}
	done := uint64(0)
	i := findSeg(im.segs, addr)
	for done < n {
		at := addr + done
		if i < 0 || i >= len(im.segs) || im.segs[i].addr > at || im.segs[i].end() <= at {
			return int(done), fmt.Errorf("read %d bytes at %#x: %w", n, addr, im.missing(at))
		}
		s := im.segs[i]
		o := at - s.addr
		k := min(uint64(len(s.data))-o, n-done)
		if p != nil {
			copy(p[done:done+k], s.data[o:o+k])
		}
		done += k
		i++
	}
	return int(done), nil
}

// missing explains why at is not in the copy.
func (im *Image) missing(at uint64) error {
	i := sort.Search(len(im.cuts), func(i int) bool { return im.cuts[i].Addr+im.cuts[i].Len > at })
	if i < len(im.cuts) && im.cuts[i].Addr <= at {
		return &CutError{Addr: at, Cut: im.cuts[i]}
	}
	return ErrNotCopied
}
