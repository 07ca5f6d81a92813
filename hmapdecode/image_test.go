package hmapdecode

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/mapsentry/mapsentry/goruntime"
)

// imageBase is where synthetic images start. An image is one contiguous
// buffer (so a fuzz input is an image) plus optional extra regions.
const imageBase = 0x10000

// image is a fake process memory: a bump-allocated contiguous buffer.
type image struct {
	buf   []byte
	extra map[uint64][]byte
}

func (m *image) ReadAt(p []byte, addr uint64) (int, error) {
	if addr >= imageBase && addr-imageBase <= uint64(len(m.buf)) && uint64(len(p)) <= uint64(len(m.buf))-(addr-imageBase) {
		return copy(p, m.buf[addr-imageBase:]), nil
	}
	for a, b := range m.extra {
		if addr >= a && addr-a <= uint64(len(b)) && uint64(len(p)) <= uint64(len(b))-(addr-a) {
			return copy(p, b[addr-a:]), nil
		}
	}
	return 0, fmt.Errorf("address %#x+%d unmapped", addr, len(p))
}

// alloc returns the address of n new zeroed bytes, 16-byte aligned.
func (m *image) alloc(n int) uint64 {
	for len(m.buf)%16 != 0 {
		m.buf = append(m.buf, 0)
	}
	a := imageBase + uint64(len(m.buf))
	m.buf = append(m.buf, make([]byte, n)...)
	return a
}

func (m *image) at(addr uint64, n int) []byte {
	o := addr - imageBase
	return m.buf[o : o+uint64(n)]
}

func (m *image) put64(addr, v uint64) { binary.LittleEndian.PutUint64(m.at(addr, 8), v) }
func (m *image) put32(addr uint64, v uint32) {
	binary.LittleEndian.PutUint32(m.at(addr, 4), v)
}
func (m *image) put16(addr uint64, v uint16) {
	binary.LittleEndian.PutUint16(m.at(addr, 2), v)
}
func (m *image) put8(addr uint64, v uint8) { m.at(addr, 1)[0] = v }

// name writes an abi.Name and returns its offset from the types base.
func (m *image) name(types uint64, s string) int32 {
	a := m.alloc(2 + len(s))
	m.put8(a, 0)
	m.put8(a+1, uint8(len(s)))
	copy(m.at(a+2, len(s)), s)
	return int32(a - types)
}

// typ writes an abi.Type header of the given size, kind and name.
func (m *image) typ(types uint64, extra int, size uint64, kind uint8, name string) uint64 {
	a := m.alloc(48 + extra)
	m.put64(a, size)
	m.put8(a+20, tflagExtraStr)
	m.put8(a+23, kind)
	m.put32(a+40, uint32(m.name(types, "*"+name)))
	return a
}

func layoutFor(t testing.TB, version string) *goruntime.Layout {
	t.Helper()
	v, err := goruntime.ParseVersion(version, "")
	if err != nil {
		t.Fatal(err)
	}
	l, err := goruntime.ForVersion(v, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

const kindInt64 = 6

// classicImg is a synthetic Go 1.19 map[int64]int64.
type classicImg struct {
	m       *image
	hdr     uint64
	typ     uint64
	types   uint64
	buckets uint64
	B       uint8
}

const classicBS = 144 // bucket<int64,int64>

func newClassic(B uint8, prealloc bool) *classicImg {
	m := &image{}
	c := &classicImg{m: m, B: B}
	c.hdr = m.alloc(48)
	c.types = m.alloc(16)
	key := m.typ(c.types, 0, 8, kindInt64, "int64")
	c.typ = m.typ(c.types, 40, 88, kindMap, "map[int64]int64")
	m.put64(c.typ+48, key)
	m.put64(c.typ+56, key)
	m.put8(c.typ+80, 8)
	m.put8(c.typ+81, 8)
	m.put16(c.typ+82, classicBS)
	m.put32(c.typ+84, 4)
	n := 1 << B
	if prealloc && B >= 4 {
		n += 1 << (B - 4)
	}
	c.buckets = m.alloc(n * classicBS)
	m.put8(c.hdr+9, B)
	m.put64(c.hdr+16, c.buckets)
	return c
}

func (c *classicImg) bucket(i int) uint64 { return c.buckets + uint64(i)*classicBS }

// set writes a live slot (tophash >= 5) with key and value k.
func (c *classicImg) set(bucket uint64, slot int, top uint8, k int64) {
	c.m.put8(bucket+uint64(slot), top)
	c.m.put64(bucket+8+uint64(slot)*8, uint64(k))
	c.m.put64(bucket+72+uint64(slot)*8, uint64(k*10))
}

func (c *classicImg) overflow(from uint64) uint64 {
	b := c.m.alloc(classicBS)
	c.m.put64(from+classicBS-8, b)
	return b
}

func (c *classicImg) count(n int64) { c.m.put64(c.hdr, uint64(n)) }
func (c *classicImg) flags(f uint8) { c.m.put8(c.hdr+8, f) }
func (c *classicImg) req(t testing.TB) Request {
	return Request{Addr: c.hdr, Layout: layoutFor(t, "go1.19.8"), TypeAddr: c.typ, TypesBase: c.types, Keys: true}
}

// fill puts n entries, filling buckets in order and chaining overflow
// buckets when one is full; returns the sum of keys.
func (c *classicImg) fill(n int) {
	nb := 1 << c.B
	k := int64(1)
	for i := 0; i < n; i++ {
		b := c.bucket(i % nb)
		slot := (i / nb)
		for slot >= bucketCnt {
			next := binary.LittleEndian.Uint64(c.m.at(b+classicBS-8, 8))
			if next == 0 {
				next = c.overflow(b)
			}
			b, slot = next, slot-bucketCnt
		}
		c.set(b, slot, uint8(5+i%200), k)
		k++
	}
	c.count(int64(n))
}

// swissImg is a synthetic map[int64]int64 for Go 1.26 or 1.27 (default or
// split group).
type swissImg struct {
	m                                    *image
	hdr, typ, types                      uint64
	version                              string
	gs, keysOff, keyStride, elemsOff, es uint64
}

func newSwiss(version string, split bool) *swissImg {
	m := &image{}
	s := &swissImg{m: m, version: version, gs: 136}
	s.hdr = m.alloc(48)
	s.types = m.alloc(16)
	key := m.typ(s.types, 0, 8, kindInt64, "int64")
	if version == "go1.26.8" {
		s.typ = m.typ(s.types, 64, 112, kindMap, "map[int64]int64")
		m.put64(s.typ+80, 136)
		m.put64(s.typ+88, 16)
		m.put64(s.typ+96, 8)
		s.keysOff, s.keyStride, s.elemsOff, s.es = 8, 16, 16, 16
	} else {
		s.typ = m.typ(s.types, 88, 136, kindMap, "map[int64]int64")
		m.put64(s.typ+80, 136)
		s.keysOff, s.keyStride, s.elemsOff, s.es = 8, 16, 16, 16
		if split {
			s.keyStride, s.elemsOff, s.es = 8, 72, 8
		}
		m.put64(s.typ+88, s.keysOff)
		m.put64(s.typ+96, s.keyStride)
		m.put64(s.typ+104, s.elemsOff)
		m.put64(s.typ+112, s.es)
	}
	m.put64(s.typ+48, key)
	m.put64(s.typ+56, key)
	return s
}

func (s *swissImg) req(t testing.TB) Request {
	return Request{Addr: s.hdr, Layout: layoutFor(t, s.version), TypeAddr: s.typ, TypesBase: s.types, Keys: true}
}

// group allocates n groups with all control bytes empty.
func (s *swissImg) groups(n int) uint64 {
	g := s.m.alloc(n * int(s.gs))
	for i := 0; i < n; i++ {
		s.m.put64(g+uint64(i)*s.gs, 0x8080808080808080)
	}
	return g
}

func (s *swissImg) set(group uint64, slot int, h2 uint8, k int64) {
	s.m.put8(group+uint64(slot), h2&0x7f)
	s.m.put64(group+s.keysOff+uint64(slot)*s.keyStride, uint64(k))
	s.m.put64(group+s.elemsOff+uint64(slot)*s.es, uint64(k*10))
}

func (s *swissImg) small(n int) uint64 {
	g := s.groups(1)
	for i := 0; i < n; i++ {
		s.set(g, i, uint8(i*13), int64(i+1))
	}
	s.m.put64(s.hdr, uint64(n))
	s.m.put64(s.hdr+16, g)
	return g
}

// table writes a table with groups groups and n entries spread over them,
// and returns its address.
func (s *swissImg) table(groups, n int, index int, localDepth uint8, k0 int64) uint64 {
	t := s.m.alloc(32)
	g := s.groups(groups)
	for i := 0; i < n; i++ {
		s.set(g+uint64(i%groups)*s.gs, i/groups, uint8(i), k0+int64(i))
	}
	capa := groups * 8
	growth := capa*7/8 - n
	if capa <= 8 {
		growth = capa - 1 - n
	}
	s.m.put16(t, uint16(n))
	s.m.put16(t+2, uint16(capa))
	s.m.put16(t+4, uint16(growth))
	s.m.put8(t+6, localDepth)
	s.m.put64(t+8, uint64(index))
	s.m.put64(t+16, g)
	s.m.put64(t+24, uint64(groups-1))
	return t
}

// dir writes a directory of the given tables (repeated per slot) and sets
// the header for globalDepth gd.
func (s *swissImg) dir(gd uint8, used int, slots ...uint64) uint64 {
	d := s.m.alloc(8 * len(slots))
	for i, t := range slots {
		s.m.put64(d+uint64(i)*8, t)
	}
	s.m.put64(s.hdr, uint64(used))
	s.m.put64(s.hdr+16, d)
	s.m.put64(s.hdr+24, uint64(len(slots)))
	s.m.put8(s.hdr+32, gd)
	s.m.put8(s.hdr+33, 64-gd)
	return d
}
