package hmapdecode

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func decode(t *testing.T, mem Memory, req Request) *Result {
	t.Helper()
	r, err := Decode(context.Background(), mem, req)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var buf bytes.Buffer
	if err := RenderText(&buf, r); err != nil {
		t.Fatalf("render: %v", err)
	}
	if testing.Verbose() {
		t.Logf("\n%s", buf.String())
	}
	return r
}

func codes(r *Result) map[string]bool {
	out := map[string]bool{}
	for _, a := range r.Anomalies {
		out[a.Code] = true
	}
	return out
}

func wantClean(t *testing.T, r *Result, n int64) {
	t.Helper()
	if len(r.Anomalies) != 0 {
		t.Errorf("anomalies on a clean map: %+v", r.Anomalies)
	}
	if r.Stats.EntriesFound != n || r.Count != n {
		t.Errorf("entries_found %d, count %d, want %d", r.Stats.EntriesFound, r.Count, n)
	}
	if r.Truncated {
		t.Errorf("truncated")
	}
	if r.GoType != "map[int64]int64" {
		t.Errorf("go_type %q", r.GoType)
	}
	if int64(len(r.Entries)) != n {
		t.Errorf("%d entries returned, want %d", len(r.Entries), n)
	}
	seen := map[uint64]bool{}
	for _, e := range r.Entries {
		k, v := binary.LittleEndian.Uint64(e.Key), binary.LittleEndian.Uint64(e.Elem)
		if v != k*10 || seen[k] {
			t.Errorf("entry %s: key %d elem %d (dup %v)", e.Where, k, v, seen[k])
		}
		seen[k] = true
	}
}

func wantCode(t *testing.T, r *Result, code string) {
	t.Helper()
	if !codes(r)[code] {
		t.Errorf("want anomaly %s, got %+v", code, r.Anomalies)
	}
}

func TestClassicClean(t *testing.T) {
	for _, tc := range []struct {
		B uint8
		n int
	}{{0, 0}, {0, 5}, {2, 20}, {4, 150}, {5, 300}} {
		c := newClassic(tc.B, true)
		c.fill(tc.n)
		r := decode(t, c.m, c.req(t))
		wantClean(t, r, int64(tc.n))
		if r.Layout != "classic" || r.TypeSource != "descriptor" || r.Stats.Buckets != 1<<tc.B {
			t.Errorf("B=%d: layout %s source %s buckets %d", tc.B, r.Layout, r.TypeSource, r.Stats.Buckets)
		}
	}
}

func TestClassicNilBuckets(t *testing.T) {
	c := newClassic(0, false)
	c.m.put64(c.hdr+16, 0)
	r := decode(t, c.m, c.req(t))
	if len(r.Anomalies) != 0 || r.Stats.EntriesFound != 0 {
		t.Errorf("empty lazily allocated map: %+v", r)
	}
}

func TestClassicPreallocOverflow(t *testing.T) {
	// Overflow buckets inside the preallocated block are served from the
	// bulk read: 16 primary buckets, chain of bucket 3 into block slot 0.
	c := newClassic(4, true)
	pre := c.bucket(16)
	for s := 0; s < 8; s++ {
		c.set(c.bucket(3), s, 9, int64(s+1))
	}
	c.m.put64(c.bucket(3)+classicBS-8, pre)
	c.set(pre, 0, 9, 100)
	c.count(9)
	r := decode(t, c.m, c.req(t))
	wantClean(t, r, 9)
	if r.Stats.Overflow != 1 || r.Stats.MaxChain != 1 {
		t.Errorf("overflow %d max chain %d", r.Stats.Overflow, r.Stats.MaxChain)
	}
	calls := r.Read.Calls
	// Header, map type and its header, key and elem headers, 3 names (2
	// reads each), prealloc block, array: 13.
	if calls > 13 {
		t.Errorf("%d read calls: overflow bucket was not served from the bulk read", calls)
	}
}

// growing builds a map mid-grow: B=2 new buckets, 2 old buckets, old 0
// evacuated (its entries in new 0 and 2), old 1 pending.
func growing(t *testing.T) *classicImg {
	c := newClassic(2, false)
	old := c.m.alloc(2 * classicBS)
	for s := 0; s < 8; s++ {
		c.m.put8(old+uint64(s), evacuatedEmpty)
	}
	c.m.put8(old, evacuatedX)
	c.set(c.bucket(0), 0, 7, 1)
	c.set(c.bucket(2), 0, 7, 2)
	ob1 := old + classicBS
	c.set(ob1, 0, 8, 3)
	c.set(ob1, 1, 8, 4)
	c.set(ob1, 2, 8, 5)
	c.m.put64(c.hdr+24, old)
	c.m.put64(c.hdr+32, 1)
	c.count(5)
	return c
}

func TestClassicGrowing(t *testing.T) {
	c := growing(t)
	r := decode(t, c.m, c.req(t))
	wantClean(t, r, 5)
	g := r.Growth
	if g == nil || !g.Growing || g.OldBuckets != 2 || g.Evacuated != 1 || g.Pending != 1 || g.EntriesInOld != 3 || g.ProgressPermil != 500 {
		t.Errorf("growth %+v", g)
	}
}

// classicMutations are clean classic maps (B = 2) damaged one way each,
// with the anomaly code the damage must produce.
func classicMutations() []struct {
	code string
	mut  func(c *classicImg)
} {
	return []struct {
		code string
		mut  func(c *classicImg)
	}{
		{CodeCountMismatch, func(c *classicImg) { c.fill(10); c.count(11) }},
		{CodeWritingFlag, func(c *classicImg) { c.fill(3); c.flags(flagHashWriting) }},
		{CodeIteratorDuringWrite, func(c *classicImg) { c.fill(3); c.flags(flagHashWriting | flagIterator) }},
		{CodeOldBuckets, func(c *classicImg) { c.fill(3); c.flags(flagSameSizeGrow) }},
		{CodeOldBuckets, func(c *classicImg) { c.fill(3); c.m.put64(c.hdr+24, c.buckets) }},
		{CodeEvacuatedInLive, func(c *classicImg) { c.fill(3); c.m.put8(c.bucket(1), evacuatedY) }},
		{CodeTopHashBelowMin, func(c *classicImg) { c.fill(3); c.m.put8(c.bucket(0)+3, evacuatedEmpty) }},
		{CodeEmptyRestThenLive, func(c *classicImg) { c.fill(3); c.set(c.bucket(0), 5, 40, 77); c.count(4) }},
		{CodeOverflowCycle, func(c *classicImg) { c.fill(40); b := c.overflow(c.bucket(1)); c.m.put64(b+classicBS-8, b) }},
		{CodeOverflowUnmapped, func(c *classicImg) { c.fill(3); c.m.put64(c.bucket(2)+classicBS-8, 0x7fff0000) }},
		{CodeOverflowUnmapped, func(c *classicImg) { c.fill(3); c.m.put64(c.bucket(2)+classicBS-8, c.buckets+3) }},
		{CodeOverflowShared, func(c *classicImg) {
			c.fill(3)
			b := c.overflow(c.bucket(1))
			c.m.put64(c.bucket(2)+classicBS-8, b)
		}},
		{CodeOverflowShared, func(c *classicImg) { c.fill(3); c.m.put64(c.bucket(2)+classicBS-8, c.bucket(0)) }},
		{CodeHeader, func(c *classicImg) { c.fill(3); c.m.put8(c.hdr+9, 70) }},
		{CodeHeader, func(c *classicImg) { c.fill(3); c.flags(0x40) }},
		{CodeUnreadable, func(c *classicImg) { c.fill(3); c.m.put64(c.hdr+16, 0x7fff0000) }},
		{CodeTypeInvalid, func(c *classicImg) { c.fill(3); c.m.put8(c.typ+23, kindInt64) }},
		{CodeTypeInvalid, func(c *classicImg) { c.fill(3); c.m.put16(c.typ+82, 1000) }},
	}
}

func TestClassicAnomalies(t *testing.T) {
	for _, tc := range classicMutations() {
		t.Run(tc.code, func(t *testing.T) {
			c := newClassic(2, false)
			tc.mut(c)
			r := decode(t, c.m, c.req(t))
			wantCode(t, r, tc.code)
		})
	}
}

func TestClassicGrowthAnomalies(t *testing.T) {
	for name, mut := range map[string]func(c *classicImg){
		"pending below nevacuate": func(c *classicImg) { c.m.put64(c.hdr+32, 2) },
		"new bucket of pending old": func(c *classicImg) {
			c.set(c.bucket(1), 0, 9, 9)
			c.count(6)
		},
		"nevacuate beyond": func(c *classicImg) { c.m.put64(c.hdr+32, 9) },
	} {
		t.Run(name, func(t *testing.T) {
			c := growing(t)
			mut(c)
			wantCode(t, decode(t, c.m, c.req(t)), CodeOldBuckets)
		})
	}
	c := growing(t)
	old := binary.LittleEndian.Uint64(c.m.at(c.hdr+24, 8))
	c.m.put8(old+5, 40)
	wantCode(t, decode(t, c.m, c.req(t)), CodeEvacuatedMixed)
}

func TestSwissCleanSmall(t *testing.T) {
	for _, v := range []struct {
		version string
		split   bool
	}{{"go1.26.8", false}, {"go1.27.3", false}, {"go1.27.3", true}, {"go1.24.0", false}, {"go1.25.0", false}} {
		for _, n := range []int{0, 1, 8} {
			s := newSwiss(v.version, v.split)
			if v.version < "go1.26" {
				s.version = v.version
			}
			if v.version == "go1.24.0" || v.version == "go1.25.0" {
				// 1.24/1.25 share the 1.26 type layout (SlotSize/ElemOff).
				s = newSwiss("go1.26.8", false)
				s.version = v.version
			}
			s.small(n)
			r := decode(t, s.m, s.req(t))
			wantClean(t, r, int64(n))
			if !r.Swiss.Small || r.Stats.Groups != 1 {
				t.Errorf("%s n=%d: small %v groups %d", v.version, n, r.Swiss.Small, r.Stats.Groups)
			}
		}
	}
}

func TestSwissNilMap(t *testing.T) {
	s := newSwiss("go1.26.8", false)
	r := decode(t, s.m, s.req(t))
	if len(r.Anomalies) != 0 || r.Stats.EntriesFound != 0 {
		t.Errorf("empty map without group: %+v", r.Anomalies)
	}
}

// twoTables builds a directory of globalDepth 2 with a shared table of
// localDepth 1 in slots 0–1 and two tables of localDepth 2 in slots 2, 3.
func twoTables(s *swissImg) (a, b, c uint64) {
	a = s.table(16, 90, 0, 1, 1)
	b = s.table(8, 40, 2, 2, 1000)
	c = s.table(2, 5, 3, 2, 2000)
	s.dir(2, 135, a, a, b, c)
	return a, b, c
}

// swissVersions are the Swiss type layouts: 1.26, 1.27, 1.27 split groups.
var swissVersions = []struct {
	version string
	split   bool
}{{"go1.26.8", false}, {"go1.27.3", false}, {"go1.27.3", true}}

func TestSwissCleanDirectory(t *testing.T) {
	for _, v := range swissVersions {
		s := newSwiss(v.version, v.split)
		twoTables(s)
		r := decode(t, s.m, s.req(t))
		wantClean(t, r, 135)
		if r.Stats.Tables != 3 || r.Stats.Groups != 26 || len(r.Tables) != 3 || r.Tables[0].DirSlots != 2 {
			t.Errorf("%s: tables %d groups %d %+v", v.version, r.Stats.Tables, r.Stats.Groups, r.Tables)
		}
	}
}

func TestSwissTombstones(t *testing.T) {
	s := newSwiss("go1.26.8", false)
	tb := s.table(2, 10, 0, 0, 1)
	s.dir(0, 9, tb)
	g := binary.LittleEndian.Uint64(s.m.at(tb+16, 8))
	s.m.put8(g+1, ctrlDeleted) // slot 1 of group 0 deleted: used 9, growthLeft unchanged
	s.m.put16(tb, 9)
	r := decode(t, s.m, s.req(t))
	if len(r.Anomalies) != 0 || r.Stats.Tombstones != 1 || r.Stats.EntriesFound != 9 {
		t.Errorf("tombstone: %+v %+v", r.Anomalies, r.Stats)
	}
}

// swissMutations are clean Swiss maps damaged one way each, with the
// anomaly code the damage must produce.
func swissMutations() []struct {
	code string
	mut  func(s *swissImg)
} {
	return []struct {
		code string
		mut  func(s *swissImg)
	}{
		{CodeCountMismatch, func(s *swissImg) { s.small(3); s.m.put64(s.hdr, 4) }},
		{CodeWritingFlag, func(s *swissImg) { s.small(3); s.m.put8(s.hdr+34, 1) }},
		{CodeHeader, func(s *swissImg) { s.small(3); s.m.put8(s.hdr+34, 7) }},
		{CodeHeader, func(s *swissImg) { s.small(3); s.m.put64(s.hdr, 9) }},
		{CodeIllegalCtrl, func(s *swissImg) { g := s.small(3); s.m.put8(g+5, 0x91) }},
		{CodeUnreadable, func(s *swissImg) { s.small(3); s.m.put64(s.hdr+16, 0x7fff0000) }},
		{CodeTableInconsistent, func(s *swissImg) { a, _, _ := twoTables(s); s.m.put16(a, 91) }},
		{CodeTableInconsistent, func(s *swissImg) { a, _, _ := twoTables(s); s.m.put16(a+4, 3) }},
		{CodeTableInconsistent, func(s *swissImg) { a, _, _ := twoTables(s); s.m.put16(a+2, 64) }},
		{CodeTableInconsistent, func(s *swissImg) { _, b, _ := twoTables(s); s.m.put64(b+24, 6) }},
		{CodeDirectory, func(s *swissImg) { a, _, _ := twoTables(s); s.m.put8(a+6, 3) }},
		{CodeDirectory, func(s *swissImg) { _, b, _ := twoTables(s); s.m.put64(b+8, 1) }},
		{CodeDirectory, func(s *swissImg) { _, b, _ := twoTables(s); s.m.put8(b+6, 1) }},
		{CodeDirectory, func(s *swissImg) { twoTables(s); s.m.put8(s.hdr+33, 12) }},
		{CodeDirectory, func(s *swissImg) { twoTables(s); s.m.put8(s.hdr+32, 3) }},
		{CodeDirectory, func(s *swissImg) {
			a, b, c := twoTables(s)
			s.dir(2, 135, a, b, a, c)
		}},
		{CodeDirectory, func(s *swissImg) {
			a, b, _ := twoTables(s)
			s.dir(2, 130, a, a, b, 0)
		}},
		{CodeUnreadable, func(s *swissImg) { a, b, _ := twoTables(s); s.dir(2, 130, a, a, b, 0x7fff0000) }},
		{CodeTypeInvalid, func(s *swissImg) { s.small(2); s.m.put64(s.typ+80, 1<<40) }},
	}
}

func TestSwissAnomalies(t *testing.T) {
	for _, tc := range swissMutations() {
		t.Run(tc.code, func(t *testing.T) {
			s := newSwiss("go1.26.8", false)
			tc.mut(s)
			wantCode(t, decode(t, s.m, s.req(t)), tc.code)
		})
	}
}

func TestLimits(t *testing.T) {
	c := newClassic(5, true)
	c.fill(200)
	req := c.req(t)
	req.Limits.MaxBytes = 2000
	r := decode(t, c.m, req)
	if !r.Truncated || !codes(r)[CodeTruncated] || codes(r)[CodeCountMismatch] {
		t.Errorf("byte limit: truncated %v %+v", r.Truncated, r.Anomalies)
	}
	if r.Read.Bytes > 2000 {
		t.Errorf("read %d bytes past a 2000-byte limit", r.Read.Bytes)
	}

	req = c.req(t)
	req.Limits.MaxEntries = 10
	r = decode(t, c.m, req)
	if !r.Truncated || len(r.Entries) != 10 || r.Stats.EntriesFound != 200 {
		t.Errorf("entry limit: truncated %v entries %d found %d", r.Truncated, len(r.Entries), r.Stats.EntriesFound)
	}

	c = newClassic(1, false)
	c.fill(4)
	b := c.bucket(0)
	for i := 0; i < 5; i++ {
		b = c.overflow(b)
	}
	req = c.req(t)
	req.Limits.MaxChain = 3
	r = decode(t, c.m, req)
	if !r.Truncated {
		t.Errorf("chain limit not reported: %+v", r.Anomalies)
	}

	s := newSwiss("go1.26.8", false)
	twoTables(s)
	req = s.req(t)
	req.Limits.MaxBuckets = 10
	r = decode(t, s.m, req)
	if !r.Truncated {
		t.Errorf("group limit not reported")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := Decode(ctx, s.m, s.req(t))
	if err == nil {
		t.Errorf("cancelled context: decoded %+v", r)
	}
	req = s.req(t)
	req.Limits.Budget = time.Nanosecond
	if r, err := Decode(context.Background(), s.m, req); err == nil && !r.Truncated {
		t.Errorf("time budget not reported")
	}
}

func TestKeysOnlyOnRequest(t *testing.T) {
	c := newClassic(2, false)
	c.fill(10)
	req := c.req(t)
	req.Keys = false
	r := decode(t, c.m, req)
	if len(r.Entries) != 0 {
		t.Errorf("entries returned without Keys")
	}
	b, _ := json.Marshal(r)
	if strings.Contains(string(b), `"entries"`) {
		t.Errorf("JSON carries entries without Keys")
	}
}

func TestInferredGeometry(t *testing.T) {
	c := newClassic(3, true)
	c.fill(50)
	req := c.req(t)
	req.TypeAddr = 0
	r := decode(t, c.m, req)
	if r.TypeSource != "inferred" || r.Stats.EntriesFound != 50 || r.Classic.BucketSize != classicBS || len(r.Anomalies) != 0 || r.Note == "" {
		t.Errorf("classic inference: source %s found %d bs %d %+v note %q", r.TypeSource, r.Stats.EntriesFound, r.Classic.BucketSize, r.Anomalies, r.Note)
	}
	for _, split := range []bool{false, true} {
		s := newSwiss("go1.27.3", split)
		twoTables(s)
		req := s.req(t)
		req.TypeAddr = 0
		r := decode(t, s.m, req)
		if r.TypeSource != "inferred" || r.Stats.EntriesFound != 135 || r.Swiss.GroupSize != 136 || len(r.Anomalies) != 0 {
			t.Errorf("swiss inference: source %s found %d gs %d %+v", r.TypeSource, r.Stats.EntriesFound, r.Swiss.GroupSize, r.Anomalies)
		}
		s = newSwiss("go1.27.3", split)
		s.small(5)
		req = s.req(t)
		req.TypeAddr = 0
		r = decode(t, s.m, req)
		if r.Stats.EntriesFound != 5 || len(r.Anomalies) != 0 || r.Note == "" {
			t.Errorf("swiss small without type: %+v", r)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	c := newClassic(0, false)
	req := c.req(t)
	if _, err := Decode(context.Background(), c.m, Request{Addr: c.hdr}); !errors.Is(err, ErrLayout) {
		t.Errorf("no layout: %v", err)
	}
	req.Addr = 0x7fff0000
	if _, err := Decode(context.Background(), c.m, req); !errors.Is(err, ErrHeader) {
		t.Errorf("unreadable header: %v", err)
	}
	if err := RenderText(&bytes.Buffer{}, nil); err == nil {
		t.Errorf("render nil")
	}
}

// viewed is an image that hands out its bytes in place (as procmem.Image
// does) and counts the bytes that reads copied out of it.
type viewed struct {
	*image
	copied int
}

func (v *viewed) ReadAt(p []byte, addr uint64) (int, error) {
	n, err := v.image.ReadAt(p, addr)
	if err == nil {
		v.copied += n
	}
	return n, err
}

func (v *viewed) View(addr, n uint64) ([]byte, bool) {
	regions := map[uint64][]byte{imageBase: v.buf}
	for a, b := range v.extra {
		regions[a] = b
	}
	for a, b := range regions {
		if addr >= a && addr-a <= uint64(len(b)) && n <= uint64(len(b))-(addr-a) {
			return b[addr-a : addr-a+n], true
		}
	}
	return nil, false
}

// Inference on a copy reads the bucket array's prefix in place: no
// buffers of its own (on a 1M-entry map, megabytes each, a dozen of them).
func TestInferenceReadsACopyInPlace(t *testing.T) {
	c := newClassic(3, true)
	c.fill(50)
	req := c.req(t)
	req.TypeAddr = 0
	v := &viewed{image: c.m}
	r := decode(t, v, req)
	if r.TypeSource != "inferred" || r.Stats.EntriesFound != 50 {
		t.Fatalf("classic inference on a copy: source %s found %d", r.TypeSource, r.Stats.EntriesFound)
	}
	if v.copied > 4096 {
		t.Errorf("inference copied %d bytes out of memory that hands them out in place", v.copied)
	}
}
