package symbolizer

import (
	"encoding/binary"
	"hash/fnv"
	"testing"

	"github.com/mapsentry/mapsentry/goruntime"
)

// hostileMem answers every read with bytes derived from the address and a
// seed, except the allgs header and the g pointer array, which it makes
// plausible so that the g and stack decoding gets exercised.
type hostileMem struct {
	seed  []byte
	text  uint64
	n     uint64
	fails bool
}

const (
	fakeAllgs = 0x100000
	fakeArray = 0x200000
)

func (m hostileMem) ReadAt(p []byte, addr uint64) (int, error) {
	for i := range p {
		a := addr + uint64(i)
		switch {
		case a >= fakeAllgs && a < fakeAllgs+24:
			var h [24]byte
			binary.LittleEndian.PutUint64(h[:], fakeArray)
			binary.LittleEndian.PutUint64(h[8:], m.n)
			binary.LittleEndian.PutUint64(h[16:], m.n)
			p[i] = h[a-fakeAllgs]
		default:
			h := fnv.New64a()
			h.Write(m.seed)
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], a/8)
			h.Write(b[:])
			v := h.Sum64()
			// Sprinkle text addresses so the unwinder follows some chains.
			if v%5 == 0 {
				v = m.text + v%0x90000
			}
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], v)
			p[i] = w[a%8]
		}
	}
	return len(p), nil
}

func FuzzCapture(f *testing.F) {
	tab, err := OpenFile(victim(f, variant{toolchain: "go1.26", stripped: true}))
	if err != nil {
		f.Fatal(err)
	}
	defer tab.Close()
	f.Add([]byte("seed"), uint16(5), uint8(26))
	f.Add([]byte{1, 2, 3}, uint16(50), uint8(19))
	f.Fuzz(func(t *testing.T, seed []byte, n uint16, minor uint8) {
		v := goruntime.Version{Major: 1, Minor: 19 + int(minor)%9}
		lay, err := goruntime.ForVersion(v, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		mem := hostileMem{seed: seed, text: tab.TextStart(), n: uint64(n % 200)}
		regs := map[int]Registers{1: {PC: tab.TextStart() + 0x100, SP: 0x7000}}
		snap, err := Capture(mem, tab, lay, regs, CaptureOptions{Allgs: fakeAllgs, MaxStackBytes: 64 << 10})
		if err != nil {
			return
		}
		gs := snap.Symbolize(tab)
		_ = Summarize(gs)
		_ = WriteTraceback(discard{}, gs)
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
