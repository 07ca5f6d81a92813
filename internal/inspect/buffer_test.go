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
	if cap(b.buf) != 1<<20 {
		t.Fatalf("kept %d bytes, want the largest (1 MiB)", cap(b.buf))
	}
}
