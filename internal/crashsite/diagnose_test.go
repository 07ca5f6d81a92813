package crashsite

import (
	"context"
	"math/rand"
	"testing"

	"github.com/mapsentry/mapsentry/report"
)

func TestCopyRegions(t *testing.T) {
	c := &Copy{}
	c.add(0x1000, []byte{1, 2, 3, 4})
	c.add(0x2000, []byte{9, 9})
	c.add(0x1004, []byte{5, 6}) // touches the first: merged
	c.add(0x0ffe, []byte{7, 8, 1})
	var b [8]byte
	if _, err := c.ReadAt(b[:8], 0x0ffe); err != nil || b != [8]byte{7, 8, 1, 2, 3, 4, 5, 6} {
		t.Fatalf("merged read %v, %v", b, err)
	}
	if _, err := c.ReadAt(b[:2], 0x1005); err == nil {
		t.Fatal("a read past the copied bytes succeeded")
	}
	if _, err := c.ReadAt(b[:2], 0x2000); err != nil || b[0] != 9 {
		t.Fatalf("second region: %v", err)
	}
	if len(c.regions) != 2 {
		t.Fatalf("%d regions, want 2", len(c.regions))
	}
}

func TestPieces(t *testing.T) {
	for _, tc := range []struct {
		expr []byte
		want []piece
	}{
		{[]byte{opCallFrameCFA}, []piece{{onStack: true}}},
		{[]byte{opFbreg, 0x70}, []piece{{onStack: true, off: -16}}},
		{[]byte{opReg0 + 3}, []piece{{}}},
		{[]byte{opFbreg, 0x08, opPiece, 8, opReg0, opPiece, 8}, []piece{{onStack: true, off: 8, size: 8}, {size: 8}}},
	} {
		got, err := pieces(tc.expr)
		if err != nil || len(got) != len(tc.want) {
			t.Fatalf("pieces(%x) = %+v, %v; want %+v", tc.expr, got, err, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("pieces(%x)[%d] = %+v, want %+v", tc.expr, i, got[i], tc.want[i])
			}
		}
	}
	if _, err := pieces([]byte{0xff}); err == nil {
		t.Error("an unknown opcode was accepted")
	}
	if _, err := pieces([]byte{opFbreg}); err == nil {
		t.Error("a truncated operand was accepted")
	}
}

// TestDiagnoseHostileMemory: garbage stacks, pointers and sections must
// cost the analysis nothing but a poorer answer: no panic, bounded.
func TestDiagnoseHostileMemory(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	tab := selfTable(t)
	for i := 0; i < 50; i++ {
		base := uint64(0xc000000000)
		img := make([]byte, 64<<10)
		for j := range img {
			img[j] = byte(rng.Intn(256))
		}
		mem := fakeMem{base: img}
		var stacks []Stack
		for j := 0; j < 8; j++ {
			sp := base + uint64(rng.Intn(len(img)))
			stacks = append(stacks, Stack{Goid: int64(j + 1), PC: rng.Uint64(), SP: sp, BP: sp + uint64(rng.Intn(4096)), Hi: sp + uint64(rng.Intn(1<<20))})
		}
		c, _ := CopyForDiagnosis(context.Background(), mem, CopyPlan{Stacks: stacks, MapAddr: base + 64, Globals: []Range{{Addr: base, Size: 4096}}})
		_ = DiagnoseMap(context.Background(), DiagnoseInput{Mem: c, Table: tab, MapAddr: base + 64, TypeAddr: base + 128, Stacks: stacks,
			Partners: []report.Partner{{Goid: 2, Op: "assign"}}})
	}
}

// countingMem is fakeMem that counts the reads it serves and refuses.
type countingMem struct {
	fakeMem
	reads, refused []uint64
}

func (m *countingMem) ReadAt(p []byte, addr uint64) (int, error) {
	n, err := m.fakeMem.ReadAt(p, addr)
	if err != nil {
		m.refused = append(m.refused, addr)
	} else {
		m.reads = append(m.reads, addr)
	}
	return n, err
}

// TestHeapWalkSkipsSmallIntegers: with the map in a low heap (Go 1.26
// randomizes the heap base; it can lie below the 64 GiB window), the small
// integers a stack is full of look near the map. The walk must not read
// them: each such read was a failed system call while the process was
// held, and through procmem.Copy a cut that made the report incomplete.
func TestHeapWalkSkipsSmallIntegers(t *testing.T) {
	const base = 0x2_0000_0000 // 8 GiB
	stack := make([]byte, 4096)
	obj := make([]byte, 4096)
	mem := &countingMem{fakeMem: fakeMem{base: stack, base + 0x10000: obj}}
	for i := 0; i < 64; i++ {
		mem.put(base+uint64(8*i), uint64(8*i)) // 0, 8, 16, ...: counters, lengths
	}
	mem.put(base+1024, base+0x10000) // one real pointer into the heap
	plan := CopyPlan{Stacks: []Stack{{Goid: 1, SP: base, Hi: base + 4096}}, MapAddr: base + 0x10040}
	c, _ := CopyForDiagnosis(context.Background(), mem, plan)
	for _, a := range mem.refused {
		if a < minUserAddr {
			t.Errorf("read of %#x: a small integer was followed as a pointer", a)
		}
	}
	if !c.covered(base+0x10000, 8) {
		t.Errorf("the real pointer %#x was not followed (reads %#x)", base+0x10000, mem.reads)
	}
}
