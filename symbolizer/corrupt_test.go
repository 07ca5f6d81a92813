package symbolizer

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"testing"
)

// sliceMem is a MemReader over a byte slice mapped at base.
type sliceMem struct {
	base uint64
	b    []byte
}

func (m sliceMem) ReadAt(p []byte, addr uint64) (int, error) {
	if addr < m.base || addr-m.base > uint64(len(m.b)) || uint64(len(p)) > uint64(len(m.b))-(addr-m.base) {
		return 0, fmt.Errorf("read %d at %#x: out of range", len(p), addr)
	}
	return copy(p, m.b[addr-m.base:]), nil
}

// realPCLNTab returns the pclntab and text start of the go1.26 victim.
func realPCLNTab(t testing.TB) ([]byte, uint64) {
	t.Helper()
	f, err := elf.Open(victim(t, variant{toolchain: "go1.26", stripped: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := f.Section(".gopclntab").Data()
	if err != nil {
		t.Fatal(err)
	}
	return data, f.Section(".text").Addr
}

func TestCorruptHeader(t *testing.T) {
	good, text := realPCLNTab(t)
	put64 := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint64(b[off:], v); return b }
	}
	cases := []struct {
		name   string
		mutate func([]byte) []byte
		want   error
	}{
		{"empty", func(b []byte) []byte { return b[:0] }, ErrBadPCLNTab},
		{"short header", func(b []byte) []byte { return b[:20] }, ErrBadPCLNTab},
		{"go1.2 magic", func(b []byte) []byte { binary.LittleEndian.PutUint32(b, 0xfffffffb); return b }, ErrBadPCLNTab},
		{"quantum 3", func(b []byte) []byte { b[6] = 3; return b }, ErrBadPCLNTab},
		{"32-bit", func(b []byte) []byte { b[7] = 4; return b }, ErrBadPCLNTab},
		{"nfunc zero", put64(8, 0), ErrBadPCLNTab},
		{"nfunc huge", put64(8, 1<<40), ErrBadPCLNTab},
		{"funcname offset past end", put64(32, 1<<40), ErrBadPCLNTab},
		{"pcln offset past end", put64(64, 1<<40), ErrBadPCLNTab},
		{"function table truncated", func(b []byte) []byte {
			return b[:binary.LittleEndian.Uint64(b[64:])+16]
		}, ErrBadPCLNTab},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(bytes.Clone(good))
			_, err := NewTable(bytes.NewReader(b), int64(len(b)), Options{TextStart: text})
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			t.Logf("%v", err)
		})
	}
	t.Run("go1.26 without text start", func(t *testing.T) {
		_, err := NewTable(bytes.NewReader(good), int64(len(good)), Options{})
		if !errors.Is(err, ErrNoTextStart) {
			t.Fatalf("err = %v, want ErrNoTextStart", err)
		}
	})
}

// TestCorruptBody flips random bytes all over a real pclntab and then asks
// for every function and a spread of PCs: errors are fine, panics are not.
func TestCorruptBody(t *testing.T) {
	good, text := realPCLNTab(t)
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 20; round++ {
		b := bytes.Clone(good)
		for i := 0; i < 200; i++ {
			// Keep the header so that the body gets exercised.
			b[72+rng.Intn(len(b)-72)] = byte(rng.Intn(256))
		}
		tab, err := NewTable(bytes.NewReader(b), int64(len(b)), Options{TextStart: text, GoFunc: text, Static: sliceMem{text, b}})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		_ = tab.Funcs(func(f Func) bool { n++; return true })
		for pc := text; pc < text+0x80000; pc += 97 {
			tab.PCToFrames(pc)
		}
		tab.LookupFunc("runtime.fatal")
	}
}

func FuzzTable(f *testing.F) {
	good, text := realPCLNTab(f)
	f.Add(good[:4096], uint64(0x401000))
	f.Add(good[:72], uint64(0))
	f.Add([]byte{0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8}, uint64(1))
	_ = text
	f.Fuzz(func(t *testing.T, b []byte, textStart uint64) {
		tab, err := NewTable(bytes.NewReader(b), int64(len(b)), Options{TextStart: textStart, GoFunc: textStart, Static: sliceMem{textStart, b}})
		if err != nil {
			return
		}
		n := 0
		_ = tab.Funcs(func(f Func) bool { n++; return n < 1000 })
		for i := uint64(0); i < 64; i++ {
			tab.PCToFrames(tab.TextStart() + i*13)
		}
		tab.LookupFunc("main.main")
	})
}

// TestCorruptBinary flips bytes inside .gopclntab, the moduledata section
// and runtime.forEachG of a real stripped binary and opens it: errors are
// fine, panics and wrong-but-confident text bases are not.
func TestCorruptBinary(t *testing.T) {
	path := victim(t, variant{toolchain: "go1.26", stripped: true})
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	var regions [][2]uint64
	for _, name := range []string{".gopclntab", ".go.module", ".noptrdata"} {
		if s := f.Section(name); s != nil {
			regions = append(regions, [2]uint64{s.Offset, s.Size})
		}
	}
	text := f.Section(".text")
	rng := rand.New(rand.NewSource(2))
	opened := 0
	for round := 0; round < 200; round++ {
		b := bytes.Clone(good)
		r := regions[rng.Intn(len(regions))]
		for i := 0; i < 1+rng.Intn(64); i++ {
			b[r[0]+uint64(rng.Int63n(int64(min(r[1], 4096))))] = byte(rng.Intn(256))
		}
		tab, err := OpenReaderAt(bytes.NewReader(b))
		if err != nil {
			continue
		}
		opened++
		if ts := tab.TextStart(); ts < text.Addr || ts >= text.Addr+text.Size {
			t.Fatalf("round %d: text start %#x outside .text", round, ts)
		}
		for pc := text.Addr; pc < text.Addr+0x20000; pc += 251 {
			tab.PCToFrames(pc)
		}
		ef, _ := elf.NewFile(bytes.NewReader(b))
		_, _ = FindAllgs(ef, tab)
	}
	t.Logf("%d of 200 corrupted binaries still opened", opened)
}
