package hmapdecode

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"
)

// fuzzLayouts are the layouts a fuzz input can select (first byte).
var fuzzLayouts = []string{"go1.19.8", "go1.24.0 X:noswissmap", "go1.24.0", "go1.25.0", "go1.26.8", "go1.27.3", "go1.27.3-X:mapsplitgroup"}

// FuzzDecode decodes arbitrary memory: the input is one contiguous image
// at imageBase holding the header at its start; sel picks the layout,
// typeOff the type descriptor (0: none). Nothing may panic, hang or
// allocate without bound; the seed corpus (testdata/fuzz/FuzzDecode) holds
// the synthetic images of the unit tests, so pointers in them lead
// somewhere and a plain `go test` replays them.
func FuzzDecode(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed.sel, seed.typeOff, seed.img)
	}
	f.Fuzz(func(t *testing.T, sel uint8, typeOff uint16, img []byte) {
		mem := &image{buf: img}
		l := layoutFor(t, fuzzLayouts[int(sel)%len(fuzzLayouts)])
		req := Request{Addr: imageBase, Layout: l, TypesBase: imageBase, Keys: sel&0x80 != 0,
			Limits: Limits{MaxBytes: 1 << 20, MaxBuckets: 1 << 12, MaxEntries: 1 << 10, MaxTables: 1 << 10, Budget: 500 * time.Millisecond}}
		if typeOff != 0 {
			req.TypeAddr = imageBase + uint64(typeOff)
		}
		r, err := Decode(context.Background(), mem, req)
		if err != nil {
			return
		}
		if r.Read.Bytes > 1<<20 {
			t.Fatalf("read %d bytes past the 1 MiB limit", r.Read.Bytes)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if err := RenderText(io.Discard, r); err != nil {
			t.Fatalf("render: %v", err)
		}
		// The held phase on the same memory: Copy must stay within the
		// limits too, and decoding what it copied must not panic either.
		cp := &fakeCopy{src: mem}
		rep, err := Copy(context.Background(), cp, req)
		if err != nil {
			return
		}
		if rep.Bytes > 1<<20 {
			t.Fatalf("copy asked for %d bytes past the 1 MiB limit", rep.Bytes)
		}
		if _, err := Decode(context.Background(), cp.frozen(), req); err != nil {
			t.Fatalf("decode of the copy: %v (decode of the memory succeeded)", err)
		}
	})
}

type fuzzSeed struct {
	sel     uint8
	typeOff uint16
	img     []byte
}

// fuzzSeeds are the unit tests' synthetic maps, one per layout family.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	var out []fuzzSeed
	add := func(sel uint8, m *image, typ uint64) {
		out = append(out, fuzzSeed{sel, uint16(typ - imageBase), append([]byte(nil), m.buf...)})
	}
	c := newClassic(3, true)
	c.fill(70)
	add(0|0x80, c.m, c.typ)
	g := newClassic(2, false)
	g.fill(0)
	add(0, g.m, g.typ)
	for i, v := range []struct {
		sel   uint8
		ver   string
		split bool
	}{{4, "go1.26.8", false}, {5, "go1.27.3", false}, {6, "go1.27.3", true}} {
		s := newSwiss(v.ver, v.split)
		s.small(5)
		add(v.sel|0x80, s.m, s.typ)
		s = newSwiss(v.ver, v.split)
		twoTables(s)
		add(v.sel, s.m, s.typ)
		if i == 0 {
			add(v.sel, s.m, imageBase)
		}
	}
	return out
}
