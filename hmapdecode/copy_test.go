package hmapdecode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"testing"
)

// fakeCopy is procmem.Copy over a synthetic image: ranges queued by Want
// are copied by Flush, ReadAt copies through, and frozen() is the copy
// alone — reading outside it fails, as procmem.Image does.
type fakeCopy struct {
	src     Memory
	segs    []fakeSeg
	cuts    []fakeCut
	flushes int
	sorted  *frozenCopy // frozen(), until the next copy
}

// maxFakeSeg bounds one range of the fake copy.
const maxFakeSeg = 1 << 26

// fakeCut is a range that could not be copied, with the error reading it
// gave (procmem.Image answers with its reason too).
type fakeCut struct {
	addr, n uint64
	err     error
}

type fakeSeg struct {
	addr uint64
	b    []byte
}

func (c *fakeCopy) Want(addr, n uint64) {
	if n == 0 || n > maxFakeSeg {
		return
	}
	b := make([]byte, n)
	if _, err := c.src.ReadAt(b, addr); err != nil {
		c.cuts = append(c.cuts, fakeCut{addr, n, err})
		return
	}
	c.segs = append(c.segs, fakeSeg{addr, b})
	c.sorted = nil
}

func (c *fakeCopy) Flush() error { c.flushes++; return nil }

func (c *fakeCopy) View(addr, n uint64) ([]byte, bool) {
	f := c.frozen().(*frozenCopy)
	if i := f.find(addr); i >= 0 && addr+n <= f.segs[i].addr+uint64(len(f.segs[i].b)) {
		s := f.segs[i]
		return s.b[addr-s.addr : addr-s.addr+n], true
	}
	if n > maxFakeSeg { // adjacent ranges, joined by a copy, as procmem.Image does
		return nil, false
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, addr); err != nil {
		return nil, false
	}
	return b, true
}

func (c *fakeCopy) ReadAt(p []byte, addr uint64) (int, error) {
	if n, err := c.frozen().ReadAt(p, addr); err == nil {
		return n, nil
	}
	n, err := c.src.ReadAt(p, addr)
	if err != nil {
		c.cuts = append(c.cuts, fakeCut{addr, uint64(len(p)), err})
		return n, err
	}
	c.segs = append(c.segs, fakeSeg{addr, append([]byte(nil), p...)})
	c.sorted = nil
	return n, nil
}

// frozen is the copy alone, its ranges sorted by address (the latest
// copy of a byte wins, which for a static image is the same byte).
func (c *fakeCopy) frozen() Memory {
	if c.sorted == nil {
		segs := append([]fakeSeg(nil), c.segs...)
		sort.SliceStable(segs, func(i, j int) bool { return segs[i].addr < segs[j].addr })
		c.sorted = &frozenCopy{segs: segs, cuts: c.cuts}
	}
	c.sorted.cuts = c.cuts
	return c.sorted
}

type frozenCopy struct {
	segs []fakeSeg // sorted by addr; may overlap
	cuts []fakeCut
}

// find returns a segment holding addr, or -1. Segments are at most
// maxFakeSeg bytes, so none starting further back can hold it.
func (f *frozenCopy) find(addr uint64) int {
	for i := sort.Search(len(f.segs), func(i int) bool { return f.segs[i].addr > addr }) - 1; i >= 0; i-- {
		if addr < f.segs[i].addr+uint64(len(f.segs[i].b)) {
			return i
		}
		if addr-f.segs[i].addr > maxFakeSeg {
			break
		}
	}
	return -1
}

var errNotCopied = errors.New("not in the copy")

func (f *frozenCopy) ReadAt(p []byte, addr uint64) (int, error) {
	done := 0
	for done < len(p) {
		at := addr + uint64(done)
		i := f.find(at)
		if i < 0 {
			for _, c := range f.cuts {
				if c.addr == addr && c.n == uint64(len(p)) {
					return done, c.err // the same read failed when copied
				}
			}
			return done, fmt.Errorf("%#x: %w", at, errNotCopied)
		}
		s := f.segs[i]
		done += copy(p[done:], s.b[at-s.addr:])
	}
	return done, nil
}

// TestCopyThenDecode: Decode on what Copy copied equals Decode on the
// whole memory, for every synthetic map, clean or damaged, with keys.
func TestCopyThenDecode(t *testing.T) {
	cases := damagedMaps(t)
	for _, B := range []uint8{0, 3, 5} {
		c := newClassic(B, true)
		c.fill(int(13) << B)
		cases = append(cases, synthMap{fmt.Sprintf("classic/B%d", B), c.m, c.req(t)})
	}
	grow := growing(t)
	cases = append(cases, synthMap{"classic/growing", grow.m, grow.req(t)})
	for _, v := range swissVersions {
		s := newSwiss(v.version, v.split)
		twoTables(s)
		cases = append(cases, synthMap{"swiss/tables-" + v.version, s.m, s.req(t)})
		s = newSwiss(v.version, v.split)
		s.small(5)
		cases = append(cases, synthMap{"swiss/small-" + v.version, s.m, s.req(t)})
	}
	n := len(cases)
	for _, c := range cases[:n] { // the same maps, type unknown: inferred
		r := c.req
		r.TypeAddr = 0
		cases = append(cases, synthMap{c.name + "/inferred", c.mem, r})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := decodeJSON(t, c.mem, c.req)
			cp := &fakeCopy{src: c.mem}
			rep, err := Copy(context.Background(), cp, c.req)
			if err != nil {
				if want != "error: "+err.Error() && !errors.Is(err, ErrHeader) && !errors.Is(err, ErrLayout) {
					t.Fatalf("Copy: %v; Decode: %s", err, want)
				}
				return
			}
			if got := decodeJSON(t, cp.frozen(), c.req); got != want {
				t.Errorf("decode of the copy:\n%s\ndecode of the memory:\n%s", got, want)
			}
			if rep.TypeSource != "none" && (rep.Ranges == 0 || rep.Bytes == 0 || rep.Unit == 0) {
				t.Errorf("report %+v", rep)
			}
		})
	}
}

func decodeJSON(t *testing.T, mem Memory, req Request) string {
	t.Helper()
	r, err := Decode(context.Background(), mem, req)
	if err != nil {
		return "error: " + err.Error()
	}
	r.Read = ReadReport{}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
