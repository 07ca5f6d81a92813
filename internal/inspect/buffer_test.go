package inspect

import (
	"os"
	"testing"

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
