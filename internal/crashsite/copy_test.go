package crashsite

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
	"unsafe"

	"github.com/mapsentry/mapsentry/internal/procmem"
)

func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// TestCopyForDiagnosisBatches: copying from a procmem.Copy (this test
// process, read like another one) queues everything into it — stacks and
// sections in one batch, then one per heap level — with no cut for the
// small integers and wild words a stack is full of, and finds the same
// objects as the range-by-range path.
func TestCopyForDiagnosisBatches(t *testing.T) {
	arena := make([]byte, 1<<20) // one heap allocation: stack, objects
	base := addrOf(arena)
	stack, obj1, obj2, obj3 := base, base+0x10000, base+0x20000, base+0x30000
	put := func(addr, v uint64) { binary.LittleEndian.PutUint64(arena[addr-base:], v) }
	for i := uint64(0); i < 64; i++ {
		put(stack+8*i, 8*i) // counters, lengths
	}
	put(stack+1024, obj1)
	put(stack+1032, obj1+0x8000_0000) // pointer-shaped, near the map, in no mapping
	put(obj1+16, obj2)
	put(obj2+8, obj3)
	plan := CopyPlan{Stacks: []Stack{{Goid: 1, SP: stack, Hi: stack + 4096}}, MapAddr: obj1 + 64}

	r, err := procmem.Open(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := r.Copy()
	own, notes := CopyForDiagnosis(context.Background(), c, plan)
	if own != nil {
		t.Fatalf("a Batch got its own copy back: the diagnosis would read two copies")
	}
	st := c.Stats()
	if st.CutRanges != 0 {
		t.Errorf("cuts %+v: guesses must not be cuts", st.Cuts)
	}
	t.Logf("copy: %+v", st)
	if st.Calls > 8 {
		t.Errorf("%d system calls for one stack and a 3-level walk: not batched", st.Calls)
	}
	for _, a := range []uint64{stack, obj1, obj2, obj3} {
		if !c.Has(a, 8) {
			t.Errorf("%#x not copied (notes %q)", a, notes)
		}
	}
	// The range-by-range path finds the same objects.
	plain, _ := CopyForDiagnosis(context.Background(), plainMem{r}, plan)
	for _, a := range []uint64{stack, obj1, obj2, obj3} {
		if !plain.covered(a, 8) {
			t.Errorf("plain path: %#x not copied", a)
		}
	}
}

// plainMem hides every method but ReadAt.
type plainMem struct{ m Memory }

func (p plainMem) ReadAt(b []byte, addr uint64) (int, error) { return p.m.ReadAt(b, addr) }

// covered (tests) reports whether [addr, addr+n) was copied.
func (c *Copy) covered(addr, n uint64) bool {
	var b [1]byte
	if n == 0 {
		return false
	}
	_, err1 := c.ReadAt(b[:], addr)
	_, err2 := c.ReadAt(b[:], addr+n-1)
	return err1 == nil && err2 == nil
}
