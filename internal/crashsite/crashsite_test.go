package crashsite

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// fakeMem is a sparse memory image: reads outside it fail like unmapped
// memory in /proc/PID/mem.
type fakeMem map[uint64][]byte // base -> bytes

func (m fakeMem) ReadAt(p []byte, addr uint64) (int, error) {
	if addr+uint64(len(p)) < addr { // wraps: like procmem, refuse
		return 0, errors.New("address out of range")
	}
	for base, b := range m {
		if addr >= base && addr+uint64(len(p)) <= base+uint64(len(b)) {
			return copy(p, b[addr-base:]), nil
		}
	}
	return 0, errors.New("unmapped")
}

func (m fakeMem) put(addr uint64, words ...uint64) {
	for base, b := range m {
		if addr >= base && addr+8*uint64(len(words)) <= base+uint64(len(b)) {
			for i, w := range words {
				binary.LittleEndian.PutUint64(b[addr-base+8*uint64(i):], w)
			}
			return
		}
	}
	panic("put outside the image")
}

// selfTable symbolizes this test binary, a real Go binary.
func selfTable(t testing.TB) *symbolizer.Table {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tab, err := symbolizer.OpenFile(exe)
	if err != nil {
		t.Fatalf("this test binary, a Go binary, not symbolizable: %v", err)
	}
	t.Cleanup(func() { tab.Close() })
	return tab
}

func layout(t testing.TB) *goruntime.Layout {
	l, err := goruntime.ForVersion(goruntime.Version{Major: 1, Minor: 26}, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pc of a function of this binary by name.
func pcOf(t testing.TB, tab *symbolizer.Table, name string) uint64 {
	f, ok := tab.LookupFunc(name)
	if !ok {
		t.Fatalf("%s not linked into the test binary", name)
	}
	return f.Entry + 4
}

// A Swiss map header and type laid out as the runtime does, found through
// the spill slots of a runtime.mapassign_fast64 frame called from a user
// function.
func TestFindMapFromSpillSlots(t *testing.T) {
	tab := selfTable(t)
	l := layout(t)
	const (
		stack = 0x7000_0000
		typ   = 0x5000_0000
		m     = 0x6000_0000
		dir   = 0x6000_1000
	)
	mem := fakeMem{stack: make([]byte, 4096), typ: make([]byte, 256), m: make([]byte, 4096+64)}
	// abi.Type: Size_ 8, PtrBytes 8, Kind_ Map (21) at +23; key, elem, group.
	mem.put(typ, 8, 8)
	mem[typ][23] = 21
	mem.put(typ+48, 0x5000_1000, 0x5000_2000, 0x5000_3000)
	// maps.Map: used 3, seed, dirPtr, dirLen 1, globalDepth 0, shift 64.
	mem.put(m, 3, 0x9e3779b97f4a7c15, dir, 1)
	mem[m][32], mem[m][33] = 0, 64

	assign := pcOf(t, tab, "runtime.mapassign_fast64")
	user := pcOf(t, tab, "github.com/mapsentry/mapsentry/internal/crashsite.TestFindMapFromSpillSlots")
	// Frame of mapassign at fp0: saved BP -> fp1 (the user frame), return
	// address into the user function; spill slots t, m, key.
	fp0, fp1 := uint64(stack+0x100), uint64(stack+0x400)
	mem.put(fp0, fp1, user, typ, m, 42)
	mem.put(fp1, 0, 0)

	s, err := FindMap(mem, tab, l, Regs{BP: fp0, RetAddr: assign})
	if err != nil {
		t.Fatal(err)
	}
	if s.MapAddr != m || s.TypeAddr != typ || s.Op != "assign" || s.MapFunction != "runtime.mapassign_fast64" {
		t.Fatalf("site %+v", s)
	}
	if s.CallSite == nil || s.CallSite.Function != "github.com/mapsentry/mapsentry/internal/crashsite.TestFindMapFromSpillSlots" {
		t.Fatalf("call site %+v", s.CallSite)
	}

	// A header inconsistent with the layout (dirLen 3 is not 1<<depth) is
	// refused, and the error says why rather than guessing.
	mem.put(m+24, 3)
	if s, err := FindMap(mem, tab, l, Regs{BP: fp0, RetAddr: assign}); err == nil {
		t.Fatalf("inconsistent header accepted: %+v", s)
	}
}

func TestOpOf(t *testing.T) {
	for fn, want := range map[string]string{
		"runtime.mapassign_fast64":                  "assign",
		"runtime.mapaccess2_faststr":                "access",
		"runtime.mapdelete_fast32":                  "delete",
		"runtime.mapiternext":                       "iterate",
		"internal/runtime/maps.(*Iter).Next":        "iterate",
		"internal/runtime/maps.(*table).grow":       "assign",
		"internal/runtime/maps.(*Map).getWithKey":   "access",
		"internal/runtime/maps.(*Map).putSlotSmall": "assign",
		"runtime.mapclear":                          "clear",
	} {
		if got := OpOf(fn); got != want {
			t.Errorf("OpOf(%s) = %q, want %q", fn, got, want)
		}
	}
}

// Arbitrary memory and registers: FindMap and Partners must return (an
// error is fine), never panic or loop.
func FuzzFindMap(f *testing.F) {
	f.Add(make([]byte, 512), uint64(0x1000), uint64(0x1008))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, uint64(0x1000), uint64(0))
	tab := selfTable(f)
	l := layout(f)
	assign := pcOf(f, tab, "runtime.mapassign_fast64")
	f.Fuzz(func(t *testing.T, data []byte, bp, extra uint64) {
		mem := fakeMem{0x1000: data}
		r := Regs{BP: bp, RetAddr: assign, GPR: []uint64{extra, 0x1000, 0x1008, bp}}
		s, err := FindMap(mem, tab, l, r)
		if err == nil && s == nil {
			t.Fatal("nil site without error")
		}
		Partners(PartnerInput{Mem: mem, Table: tab, Layout: l, Site: s,
			Goroutines: []symbolizer.RawGoroutine{{ID: 2, Addr: 0x1000, Status: 2, TID: 7}, {ID: 3, Addr: bp, Status: 4}},
			Threads:    map[int]symbolizer.Registers{7: {PC: assign, SP: 0x1000, BP: bp}},
			Others:     []Fatal{{TID: 9, Goid: 5, Regs: r}},
		})
	})
}

func TestIsGoWrapper(t *testing.T) {
	for name, want := range map[string]bool{
		"main.main.gowrap3":       true,
		"pkg.(*T).run.gowrap12":   true,
		"main.gowrapper":          false,
		"main.main.gowrap":        false,
		"main.writerB":            false,
		"main.main.func3.gowrap1": true,
	} {
		if got := isGoWrapper(name); got != want {
			t.Errorf("isGoWrapper(%q) = %v", name, got)
		}
	}
}

// A goroutine stopped in a map function's prologue still has its caller's
// BP: the walk must take the frame from the pclntab and keep the user
// function that called into the map (found missing in bench/partners: a
// Go 1.19 writer named after its go-statement wrapper instead).
func TestWalkFromPrologue(t *testing.T) {
	tab := selfTable(t)
	assign, ok := tab.LookupFunc("runtime.mapassign_fast64")
	if !ok {
		t.Fatal("runtime.mapassign_fast64 not linked into the test binary")
	}
	user := pcOf(t, tab, "github.com/mapsentry/mapsentry/internal/crashsite.TestFindMapFromSpillSlots")
	outer := pcOf(t, tab, "testing.tRunner")
	const stack = 0x7000_0000
	mem := fakeMem{stack: make([]byte, 4096)}
	// The user function's frame at fp1, called by tRunner (frame fp2).
	fp1, fp2 := uint64(stack+0x400), uint64(stack+0x800)
	mem.put(fp1, fp2, outer)
	mem.put(fp2, 0, 0)
	want := []string{"runtime.mapassign_fast64", "github.com/mapsentry/mapsentry/internal/crashsite.TestFindMapFromSpillSlots", "testing.tRunner"}
	check := func(what string, frames []frame) {
		t.Helper()
		var got []string
		for _, f := range frames {
			got = append(got, f.fn)
		}
		if len(got) < len(want) {
			t.Fatalf("%s: frames %v, want %v first", what, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: frames %v, want %v first", what, got, want)
			}
		}
	}

	// At the entry: the return address at [SP], BP is the user's.
	sp := uint64(stack + 0x200)
	mem.put(sp, user)
	check("at entry", walkFrom(mem, tab, assign.Entry, sp, fp1))

	// Past the prologue: the frame is built and BP points into it.
	var pc uint64
	var d int64
	for a := assign.Entry + 1; a < assign.End; a++ {
		if v, err := tab.SPDelta(&assign, a); err == nil && v > 8 {
			pc, d = a, v
			break
		}
	}
	if pc == 0 {
		t.Fatal("no pc with a frame in runtime.mapassign_fast64")
	}
	sp = stack + 0x100
	fp0 := sp + uint64(d) - 8
	mem.put(fp0, fp1, user)
	check("in the body", walkFrom(mem, tab, pc, sp, fp0))
}
