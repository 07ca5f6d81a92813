package inspect

import (
	"os"
	"testing"
	"unsafe"

	"github.com/mapsentry/mapsentry/internal/procmem"
)

func TestCopyBufferReused(t *testing.T) {
	newCopy := func() *procmem.Copy {
		r, err := procmem.Open(os.Getpid(), 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r.Copy()
	}
	var b copyBuffer
	a := newCopy()
	done := b.reserve(a, 1<<20)
	first := a.Spare()
	if len(first) != 1<<20 {
		t.Fatalf("reserved %d bytes", len(first))
	}
	done()
	c := newCopy()
	done = b.reserve(c, 1<<19) // smaller: the kept buffer
	if got := c.Spare(); &got[0] != &first[0] {
		t.Fatal("the kept buffer was not reused")
	}
	d := newCopy()
	doneD := b.reserve(d, 1<<19) // while the first is in use: a new one
	if got := d.Spare(); &got[0] == &first[0] {
		t.Fatal("a buffer in use was handed out twice")
	}
	doneD()
	done()
	if b.kept == nil || b.kept.Len() != 1<<20 {
		t.Fatalf("kept %v, want the largest (1 MiB)", b.kept)
	}
	b.close()
	if b.kept != nil {
		t.Fatal("close kept a buffer")
	}
	done = b.reserve(newCopy(), 1<<20)
	done() // given back after close: unmapped, not kept
	if b.kept != nil {
		t.Fatal("a buffer given back after close was kept")
	}
}

// A Buffer is mapped, writable, populated, and unmapped once.
func TestBufferMapsAndFrees(t *testing.T) {
	buf, err := procmem.NewBuffer(3 << 20)
	if err != nil {
		t.Fatal(err)
	}
	m := buf.Bytes()
	if len(m) != 3<<20 {
		t.Fatalf("%d bytes", len(m))
	}
	m[0], m[len(m)-1] = 1, 2
	if err := buf.Free(); err != nil {
		t.Fatal(err)
	}
	if buf.Bytes() != nil || buf.Len() != 0 {
		t.Fatal("bytes of a freed buffer")
	}
	if err := buf.Free(); err == nil {
		t.Fatal("a second Free unmapped again")
	}
	if _, err := procmem.NewBuffer(0); err == nil {
		t.Fatal("a 0-byte buffer")
	}
}

// The estimate's scratch: large reads of the live process land in the
// scratch buffer, each in a part of its own, read from the process; small
// reads and reads past its end go to the heap. The Inspector lends its
// kept buffer as scratch when it is idle, else maps one it unmaps after.
func TestScratchMem(t *testing.T) {
	r, err := procmem.Open(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src := make([]byte, 3*scratchMin)
	for i := range src {
		src[i] = byte(i * 7)
	}
	addr := uint64(uintptrOf(src))
	var b copyBuffer
	buf, free := b.scratch(4 * scratchMin)
	if len(buf) != 4*scratchMin {
		t.Fatalf("scratch of %d bytes", len(buf))
	}
	s := &scratchMem{Reader: r, buf: buf}
	if _, ok := s.View(addr, scratchMin-1); ok {
		t.Error("a small read took scratch")
	}
	one, ok := s.View(addr, 2*scratchMin)
	if !ok || string(one) != string(src[:2*scratchMin]) {
		t.Fatalf("View: %v, bytes differ from the process's", ok)
	}
	two, ok := s.View(addr+scratchMin, scratchMin)
	if !ok || string(two) != string(src[scratchMin:2*scratchMin]) || string(one) != string(src[:2*scratchMin]) {
		t.Fatal("a second View overwrote the first, or read wrong bytes")
	}
	if _, ok := s.View(addr, 2*scratchMin); ok {
		t.Error("a View past the scratch's end was given")
	}
	free()

	// Kept and idle: lent, and kept again after.
	done := b.reserve(newTestCopy(t), 1<<20)
	done()
	kept := b.kept
	buf, free = b.scratch(scratchMin)
	if b.kept != nil || &buf[0] != &kept.Bytes()[0] {
		t.Fatal("the idle kept buffer was not lent as scratch")
	}
	free()
	if b.kept != kept {
		t.Fatal("the lent buffer was not kept again")
	}
	b.close()
}

func newTestCopy(t *testing.T) *procmem.Copy {
	r, err := procmem.Open(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r.Copy()
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
