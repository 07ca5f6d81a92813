package hmapdecode

import (
	"context"
	"testing"
)

// viewImage is an image that hands out its bytes in place, as a
// procmem.Image does.
type viewImage struct{ *image }

func (v viewImage) View(addr, n uint64) ([]byte, bool) {
	if addr < imageBase || addr-imageBase+n > uint64(len(v.buf)) || addr+n < addr {
		return nil, false
	}
	o := addr - imageBase
	return v.buf[o : o+n : o+n], true
}

// bigSwiss is a Swiss map of 2^depth tables of 128 groups, 700 entries each.
func bigSwiss(tb testing.TB, depth uint8) (Memory, Request, int64) {
	s := newSwiss("go1.26.8", false)
	tables := make([]uint64, 1<<depth)
	for i := range tables {
		tables[i] = s.table(128, 700, i, depth, int64(i)*1000)
	}
	s.dir(depth, 700*len(tables), tables...)
	req := Request{Addr: s.hdr, Layout: layoutFor(tb, s.version), TypeAddr: s.typ, TypesBase: s.types}
	return viewImage{s.m}, req, int64(700 * len(tables))
}

// bigClassic is a classic map of 2^B buckets, 6 entries each.
func bigClassic(tb testing.TB, B uint8) (Memory, Request, int64) {
	c := newClassic(B, true)
	c.fill(6 << B)
	req := Request{Addr: c.hdr, Layout: layoutFor(tb, "go1.19.8"), TypeAddr: c.typ, TypesBase: c.types}
	return viewImage{c.m}, req, int64(6 << B)
}

// BenchmarkDecodeCopy decodes maps of ~180k and ~400k entries from
// memory read in place: allocations per decode must not grow with the
// entries (none per slot), and b.SetBytes gives the speed.
func BenchmarkDecodeCopy(b *testing.B) {
	for _, bc := range []struct {
		name string
		mk   func(testing.TB) (Memory, Request, int64)
	}{
		{"swiss-256-tables", func(tb testing.TB) (Memory, Request, int64) { return bigSwiss(tb, 8) }},
		{"classic-B16", func(tb testing.TB) (Memory, Request, int64) { return bigClassic(tb, 16) }},
	} {
		mem, req, n := bc.mk(b)
		for _, w := range []int{1, 0} {
			req.Limits.Workers = w
			name := bc.name + "/one-walk"
			if w == 0 {
				name = bc.name + "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				var bytes int64
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					r, err := Decode(context.Background(), mem, req)
					if err != nil || r.Stats.EntriesFound != n || len(r.Anomalies) != 0 {
						b.Fatalf("%v %d %+v", err, r.Stats.EntriesFound, r.Anomalies)
					}
					bytes = r.Read.Bytes
				}
				b.SetBytes(bytes)
			})
		}
	}
}
