package crashsite

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// fakeHeap is a Go 1.26-shaped heap in a fake memory: mheap_, one L2
// array, one heap arena, one span of 48-byte objects, specials and a
// bucket, laid out at fixed addresses the tests then corrupt.
type fakeHeap struct {
	h    *goruntime.HeapOffsets
	mem  fakeMem
	p    uint64 // the map header
	span uint64
	spec []uint64 // specials, in list order
	bkt  uint64
}

const (
	fhMHeap  = 0x10_0000
	fhL2     = 0x2000_0000
	fhArena  = 0x30_0000
	fhSpan   = 0x40_0000
	fhSpecs  = 0x50_0000
	fhBucket = 0x60_0000
	fhStart  = 0xc000_0000_00 // the span's first object
)

func newFakeHeap(t *testing.T) *fakeHeap {
	h := &goruntime.HeapOffsets{
		MHeap: fhMHeap, Arenas: 0, L1: 1, L2: 1 << 22, L1Shift: 22, ArenaBase: 0xffff800000000000,
		HeapArenaBytes: 64 << 20, PageSize: 8192, Spans: 0, PagesPerArena: 8192,
		SpanSize: 160, SpanStartAddr: 24, SpanElemSize: 104, SpanLimit: 112, SpanState: 99, SpanSpecials: 128, SpanInUse: 1,
		SpecialNext: 0, SpecialOffset: 8, SpecialKind: 16, SpecialOffsetSize: 8, KindProfile: 4,
		ProfileBucket: 24, ProfileSize: 32, BucketNStk: 40, BucketSize: 48,
	}
	p := uint64(fhStart + 3*48 + 8) // inside the fourth object
	ai := (p - h.ArenaBase) / h.HeapArenaBytes
	if ai >= h.L2 {
		t.Fatalf("fake heap address %#x: arena index %d out of range", p, ai)
	}
	// Of the L2 array, only the map's slot.
	f := &fakeHeap{h: h, p: p, mem: fakeMem{
		fhMHeap: make([]byte, 64), fhL2 + 8*ai: make([]byte, 8), fhArena: make([]byte, 8*8192),
		fhSpan: make([]byte, 160), fhSpecs: make([]byte, 32*8), fhBucket: make([]byte, 48+8*4),
	}}
	f.mem.put(fhMHeap, fhL2)
	f.mem.put(fhL2+8*ai, fhArena)
	f.mem.put(fhArena+8*((f.p/8192)%8192), fhSpan)
	f.mem.put(fhSpan+24, fhStart)
	f.mem.put(fhSpan+104, 48)
	f.mem.put(fhSpan+112, fhStart+8192)
	f.mem.put(fhSpan+128, fhSpecs)
	f.mem[fhSpan][99] = 1
	// Profile records of objects 0, 2 and 3 (at base+8, as with a malloc
	// header), then 5.
	for i, obj := range []uint64{0, 2, 3, 5} {
		s := fhSpecs + 32*uint64(i)
		next := s + 32
		if i == 3 {
			next = 0
		}
		f.mem.put(s, next, obj*48+8, 4, 0)
		f.spec = append(f.spec, s)
	}
	f.bkt = fhBucket
	f.mem.put(f.spec[2]+24, fhBucket)
	f.mem.put(fhBucket+40, 3)
	f.mem.put(fhBucket+48, 0x1111, 0x2222, 0x3333)
	return f
}

func (f *fakeHeap) walk() ([]uint64, string) {
	return walkAllocProfile(f.h, f.h.MHeap, f.p, readProfMem{f.mem})
}

// TestAllocProfileWalk: the walk finds the map's own record among its
// span's, and on malformed input — a cycle in the specials, a huge
// nstk, a zero elemsize, a span of another state, an unreadable
// bucket — returns no stack and a note saying what, without panicking.
func TestAllocProfileWalk(t *testing.T) {
	f := newFakeHeap(t)
	pcs, note := f.walk()
	if fmt.Sprint(pcs) != fmt.Sprint([]uint64{0x1111, 0x2222, 0x3333}) || note != "" {
		t.Fatalf("walk = %#x, %q; want the bucket's three PCs", pcs, note)
	}
	for _, tc := range []struct {
		name    string
		corrupt func(f *fakeHeap)
		note    string
	}{
		{"cycle", func(f *fakeHeap) { f.mem.put(f.spec[1], f.spec[0]) }, "a cycle"},
		{"self cycle", func(f *fakeHeap) { f.mem.put(f.spec[0], f.spec[0]) }, "a cycle"},
		{"huge nstk", func(f *fakeHeap) { f.mem.put(fhBucket+40, 1<<62) }, "nstk"},
		{"zero nstk", func(f *fakeHeap) { f.mem.put(fhBucket+40, 0) }, "nstk"},
		{"zero elemsize", func(f *fakeHeap) { f.mem.put(fhSpan+104, 0) }, "malformed"},
		{"elemsize past limit", func(f *fakeHeap) { f.mem.put(fhSpan+104, 1<<40) }, "malformed"},
		{"span not in use", func(f *fakeHeap) { f.mem[fhSpan][99] = 0 }, "malformed"},
		{"span elsewhere", func(f *fakeHeap) { f.mem.put(fhSpan+24, fhStart+1<<20) }, "malformed"},
		{"no span", func(f *fakeHeap) { f.mem.put(fhArena+8*((f.p/8192)%8192), 0) }, "no span"},
		{"span unreadable", func(f *fakeHeap) { f.mem.put(fhArena+8*((f.p/8192)%8192), 0xdead_0000) }, "not readable"},
		{"no arena", func(f *fakeHeap) { f.mem.put(fhMHeap, 0) }, "not readable or empty"},
		{"special unreadable", func(f *fakeHeap) { f.mem.put(f.spec[1], 0xbad_0000) }, "not copied"},
		{"bucket unreadable", func(f *fakeHeap) { f.mem.put(f.spec[2]+24, 0xbad_0000) }, "not readable"},
		{"no bucket", func(f *fakeHeap) { f.mem.put(f.spec[2]+24, 0) }, "no bucket"},
		{"not sampled", func(f *fakeHeap) { f.mem.put(f.spec[2]+16, 2) }, "not sampled"},
		{"list ends early", func(f *fakeHeap) { f.mem.put(f.spec[1], 0) }, "not sampled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeHeap(t)
			tc.corrupt(f)
			pcs, note := f.walk()
			if len(pcs) != 0 || !strings.Contains(note, tc.note) {
				t.Errorf("walk = %#x, %q; want no stack and a note with %q", pcs, note, tc.note)
			}
		})
	}
	// A long chain (a specials list that goes on past the bound) stops.
	long := newFakeHeap(t)
	long.p = fhStart + 8000
	ring := make([]byte, 32*(maxSpecials+8))
	long.mem[0x70_0000] = ring
	for i := 0; i < maxSpecials+8; i++ {
		long.mem.put(0x70_0000+32*uint64(i), 0x70_0000+32*uint64(i+1), 0, 1, 0)
	}
	long.mem.put(fhSpan+128, 0x70_0000)
	if pcs, note := long.walk(); len(pcs) != 0 || !strings.Contains(note, "longer than") {
		t.Errorf("long list: %#x, %q", pcs, note)
	}
	// A layout whose offsets lie outside its sizes is refused, not indexed.
	bad := newFakeHeap(t)
	bad.h.SpanSpecials = goruntime.Offset(bad.h.SpanSize)
	if pcs, note := bad.walk(); len(pcs) != 0 || !strings.Contains(note, "incomplete") {
		t.Errorf("bad layout: %#x, %q", pcs, note)
	}
}

// TestAllocProfileHostile: random bytes everywhere the walk reads cost
// nothing but a note.
func TestAllocProfileHostile(t *testing.T) {
	seed := uint64(1)
	for i := 0; i < 2000; i++ {
		g := newFakeHeap(t)
		for _, base := range []uint64{fhSpan, fhSpecs, fhBucket} {
			b := g.mem[base]
			for j := range b {
				seed = seed*6364136223846793005 + 1442695040888963407
				if seed>>60 == 0 {
					b[j] = byte(seed >> 32)
				}
			}
		}
		if pcs, note := g.walk(); len(pcs) == 0 && note == "" {
			t.Fatalf("no stack and no note")
		}
	}
}

// allocVictim builds testdata/allocsite with toolchain tc and go build
// flags extra.
func allocVictim(t *testing.T, tc string, extra ...string) (path string, line int) {
	t.Helper()
	src, _ := filepath.Abs("testdata/allocsite")
	out := filepath.Join(t.TempDir(), "allocsite-"+tc)
	testenv.BuildGo(t, src, tc, out, nil, extra...)
	b, err := os.ReadFile(filepath.Join(src, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(l, "// alloc site") {
			return out, i + 1
		}
	}
	t.Fatal("testdata/allocsite/main.go has no // alloc site line")
	return "", 0
}

// TestAllocSiteLive: a map only an interface value in a channel buffer
// holds, made under GODEBUG=memprofilerate=1: copied as the capture
// does while the process is stopped (one procmem.Copy, a few batches),
// then walked from that copy, the allocation site is main.newLedger at
// the make's exact line, on Go 1.19 (where the program sets
// runtime.MemProfileRate itself), 1.26 and 1.27. At the default rate
// the runtime rarely samples it: the note gives the rate, no site is
// guessed. A binary that does not link the memory profiler never
// samples (the runtime zeroes MemProfileRate): the note says that.
func TestAllocSiteLive(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range testenv.Toolchains() {
		t.Run(tc, func(t *testing.T) {
			cases := []struct {
				name, env string
				tags      []string
				want      string // the note, when no site is found
			}{
				{name: "every allocation sampled", env: "GODEBUG=memprofilerate=1"},
				{name: "default rate", env: "GODEBUG=", want: "samples about one allocation per 524288 bytes"},
				{name: "profiler not linked", env: "GODEBUG=memprofilerate=1", tags: []string{"-tags", "noprof"}, want: "memory profiling is off in this process"},
			}
			if tc == "go1.19" {
				cases[0].env = "ALLOCSITE_EVERY=1" // golang/go#55100
			}
			for _, c := range cases {
				path, line := allocVictim(t, tc, c.tags...)
				h := heapLayoutOf(t, path)
				tab, err := symbolizer.OpenFile(path)
				if err != nil {
					t.Fatal(err)
				}
				v, notes, rounds := allocSiteOf(t, path, c.env, h, tab)
				tab.Close()
				t.Logf("%s, %s: site %+v, note %q, %d copy rounds, stack %+v", tc, c.name, v.AllocSite, v.AllocNote, rounds, v.AllocStack)
				if rounds > maxAllocRounds {
					t.Errorf("%s: %d copy rounds while held, bound %d", c.name, rounds, maxAllocRounds)
				}
				switch {
				case c.want == "" && (v.AllocSite == nil || v.AllocSite.Function != "main.newLedger" ||
					filepath.Base(v.AllocSite.File) != "main.go" || v.AllocSite.Line != line):
					t.Errorf("%s: alloc site %+v, want main.newLedger at main.go:%d (notes %q)", c.name, v.AllocSite, line, notes)
				case c.want == "" && (len(v.AllocStack) < 2 || !isRuntime(v.AllocStack[0].Function)):
					t.Errorf("%s: alloc stack %+v: want the runtime's frames, then the user's", c.name, v.AllocStack)
				case c.want != "" && v.AllocSite != nil && v.AllocSite.Line != line:
					t.Errorf("%s: not sampled, but a wrong site was given: %+v", c.name, v.AllocSite)
				case c.want != "" && v.AllocSite == nil && !strings.Contains(v.AllocNote, c.want):
					t.Errorf("%s: note %q, want it to say %q", c.name, v.AllocNote, c.want)
				}
			}
		})
	}
}

// heapLayoutOf reads the heap layout from the DWARF of the binary at path.
func heapLayoutOf(t *testing.T, path string) *goruntime.HeapOffsets {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	dw, err := ef.DWARF()
	if err != nil {
		t.Fatal(err)
	}
	var l goruntime.Layout
	if err := l.ApplyHeapDWARF(dw); err != nil {
		t.Fatalf("heap layout of %s: %v", path, err)
	}
	if l.Heap.MemProfileRate == 0 {
		t.Errorf("heap layout of %s: runtime.MemProfileRate not found in DWARF", path)
	}
	return l.Heap
}

// allocSiteOf runs the victim, stops it, copies the allocation-site
// chain into a procmem.Copy as the capture does while holding it, and
// walks that copy (the process still stopped: nothing else is read).
func allocSiteOf(t *testing.T, path, env string, h *goruntime.HeapOffsets, tab *symbolizer.Table) (*report.Variable, []string, int) {
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), env)
	r := testenv.StartReady(t, cmd)
	var addr uint64
	var junk int
	if _, err := fmt.Sscanf(strings.TrimSpace(r.Line), "ready %v %d", &addr, &junk); err != nil {
		t.Fatalf("victim said %q: %v", r.Line, err)
	}
	if err := syscall.Kill(r.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(r.PID, syscall.SIGCONT) // StartReady's cleanup kills it
	rd, err := procmem.Open(r.PID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	c := rd.Copy()
	before := c.Stats().Calls
	_, notes := CopyForDiagnosis(context.Background(), c, CopyPlan{MapAddr: addr, Heap: h})
	rounds := int(c.Stats().Calls - before)
	out := &Diagnosis{Notes: notes}
	v := &report.Variable{Source: report.SourceTypeOnly}
	allocSite(DiagnoseInput{Mem: c.Image(), Table: tab, MapAddr: addr, Heap: h}, v, out)
	return v, out.Notes, rounds
}
