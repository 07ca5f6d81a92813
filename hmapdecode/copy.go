package hmapdecode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mapsentry/mapsentry/goruntime"
)

// Copier is memory that copies many ranges at once while the target is
// held (procmem.Copy satisfies it): Want queues a range, Flush copies all
// queued ranges in as few system calls as it can, View hands out copied
// bytes in place, and ReadAt copies through (a small read the copy does
// not hold yet is read from the target once and kept).
type Copier interface {
	Memory
	Want(addr, n uint64)
	Flush() error
	View(addr, n uint64) ([]byte, bool)
}

// CopyReport says what Copy found while copying.
type CopyReport struct {
	// Unit is the bucket (classic) or group (Swiss) size the copy was
	// planned with: the descriptor's, or inferred from the map's memory
	// (TypeSource); 0 when neither was possible (header only).
	Unit       uint64 `json:"unit,omitempty"`
	TypeSource string `json:"type_source"`
	// Ranges and Bytes are what was asked of the copier (the copier says
	// what it actually copied and in how many system calls).
	Ranges     int   `json:"ranges"`
	Bytes      int64 `json:"bytes"`
	DurationNS int64 `json:"duration_ns"`
}

// Copy copies, while the target is held, the bytes Decode reads for req:
// the header, the type descriptors and names, then in bulk the bucket
// arrays and overflow chains or the directory, tables and group arrays,
// and — with Keys — indirect keys and values and string-key text. It
// decodes nothing: Decode runs on the copy (procmem.Image) after the
// target was released and reads exactly what was copied. Copy reads the
// map's own pointers to know what to copy (an overflow chain is copied
// one level per batch) and bounds everything by req.Limits, like Decode.
// It fails only when Decode would (no layout, header unreadable) or when
// the copier does (the process is gone).
func Copy(ctx context.Context, mem Copier, req Request) (*CopyReport, error) {
	if mem == nil {
		return nil, errors.New("copy map: nil memory")
	}
	if req.Layout == nil {
		return nil, fmt.Errorf("copy map at %#x: %w", req.Addr, ErrLayout)
	}
	if req.Addr == 0 {
		return nil, fmt.Errorf("copy map at 0: nil map: %w", ErrHeader)
	}
	start := time.Now()
	p := &planner{d: newDecoder(ctx, mem, req, start), mem: mem, seen: map[uint64]bool{}}
	var err error
	switch req.Layout.Maps {
	case goruntime.MapClassic:
		err = p.classic()
	case goruntime.MapSwiss:
		err = p.swiss()
	default:
		err = fmt.Errorf("copy map at %#x: map kind %q: %w", req.Addr, req.Layout.Maps, ErrLayout)
	}
	if err == nil {
		err = p.flush()
	}
	rep := &CopyReport{Ranges: p.ranges, Bytes: p.bytes, TypeSource: p.d.res.TypeSource, DurationNS: time.Since(start).Nanoseconds()}
	if t := p.d.typ; t != nil {
		rep.Unit = max(t.bucketSize, t.groupSize)
	}
	if rep.TypeSource == "" {
		rep.TypeSource = "none"
	}
	return rep, err
}

// planner decides what to copy; its decoder reads headers and descriptors
// through the copier (so they are copied too), and its findings are
// thrown away: Decode makes them again from the copy.
type planner struct {
	d      *decoder
	mem    Copier
	ranges int
	bytes  int64
	seen   map[uint64]bool // overflow buckets queued or walked
	err    error           // the copier failed
}

// want queues a range, within the decode's byte limit.
func (p *planner) want(addr, n uint64) bool {
	if n == 0 || addr == 0 {
		return true
	}
	if p.bytes+int64(n) > p.d.lim.MaxBytes || int64(n) < 0 {
		return false
	}
	p.ranges++
	p.bytes += int64(n)
	p.mem.Want(addr, n)
	return true
}

func (p *planner) flush() error {
	if p.err == nil {
		p.err = p.mem.Flush()
	}
	return p.err
}

// view returns copied bytes, or nil.
func (p *planner) view(addr, n uint64) []byte {
	b, ok := p.mem.View(addr, n)
	if !ok {
		return nil
	}
	return b
}

// each calls fn with each of the n units of size bytes at base that are
// in the copy (one look-up for the whole array when it can). A unit not
// in the copy is skipped: this runs while the process is held, and one
// read per unit is what the copy exists to avoid; Decode reports it.
func (p *planner) each(base, n, size uint64, fn func(i uint64, unit []byte)) {
	if arr := p.view(base, n*size); arr != nil {
		for i := uint64(0); i < n; i++ {
			fn(i, arr[i*size:(i+1)*size])
		}
		return
	}
	for i := uint64(0); i < n; i++ {
		if u := p.view(base+i*size, size); u != nil {
			fn(i, u)
		}
	}
}

// classic copies buckets, old buckets and overflow chains.
func (p *planner) classic() error {
	d := p.d
	h, walk, err := d.classicStart()
	if err != nil || !walk {
		return err
	}
	c := &classicPlan{p: p, bs: d.typ.bucketSize, units: uint64(d.lim.MaxBuckets)}
	c.wantArrays(h)
	if err := p.flush(); err != nil {
		return err
	}
	c.firstLinks()
	if done, err := c.chains(); err != nil || !done {
		return err
	}
	return p.keys(c.keyUnits, func(i int) (k, e uint64) {
		t := d.typ
		return 8 + uint64(i)*t.keySlot, 8 + bucketCnt*t.keySlot + uint64(i)*t.elemSlot
	}, func(unit []byte, i int) bool { return unit[i] >= minTopHash })
}

// classicPlan is the copy plan of one classic map: the bucket arrays
// queued, the buckets still allowed under MaxBuckets (Decode walks no
// more, so none beyond them is copied), the overflow buckets to look at
// next, and the buckets whose entries Keys asks for.
type classicPlan struct {
	p        *planner
	bs       uint64
	units    uint64
	arrays   []plannedArray
	next     []uint64
	keyUnits [][]byte
}

// wantArrays queues the current bucket array and, while the map grows,
// the old one (half the size, or the same for a same-size grow). An old
// array Decode does not walk (the current one again, or B = 0 without a
// same-size grow) is not queued: Decode reports it.
func (c *classicPlan) wantArrays(h *ClassicHeader) {
	c.wantArray(h.Buckets, h.B, false)
	if h.OldBuckets != 0 && h.OldBuckets != h.Buckets {
		oldB := h.B
		if h.Flags&flagSameSizeGrow == 0 && h.B > 0 {
			oldB = h.B - 1
		}
		if h.Flags&flagSameSizeGrow != 0 || h.B > 0 {
			c.wantArray(h.OldBuckets, oldB, true)
		}
	}
}

// wantArray queues the 2^b buckets at base (as many as MaxBuckets still
// allows) with the preallocated overflow buckets that follow a whole
// array from b = 4 on, or without them when the byte limit has no room
// for them; an array that fits neither way is not copied.
func (c *classicPlan) wantArray(base uint64, b uint8, old bool) {
	bs := c.bs
	n := min(uint64(1)<<b, c.units)
	c.units -= n
	size := n * bs
	if b >= 4 && n == uint64(1)<<b {
		size += (uint64(1) << (b - 4)) * bs // preallocated overflow buckets
	}
	if !c.p.want(base, size) {
		if size = n * bs; !c.p.want(base, size) {
			return
		}
	}
	c.arrays = append(c.arrays, plannedArray{base: base, n: n, size: size, old: old})
}

// firstLinks looks at every copied bucket of the arrays: it follows its
// overflow pointer and keeps it for Keys. An evacuated old bucket is
// skipped, as Decode does not walk its chain.
func (c *classicPlan) firstLinks() {
	for _, a := range c.arrays {
		c.p.each(a.base, a.n, c.bs, func(_ uint64, bk []byte) {
			if a.old && bk[0] > emptyOne && bk[0] < minTopHash {
				return // evacuated: Decode does not walk its chain
			}
			c.follow(bk)
			c.keyUnits = c.p.keyUnit(c.keyUnits, bk)
		})
	}
}

// chains copies the overflow chains one level per batch, at most MaxChain
// levels: the pointers of the buckets copied last say which buckets to
// copy next. done is false when the decode's time ran out: Decode then
// says what is missing, and no keys are copied.
func (c *classicPlan) chains() (done bool, err error) {
	p := c.p
	for depth := 0; len(c.next) > 0 && depth < p.d.lim.MaxChain; depth++ {
		if err := p.flush(); err != nil {
			return false, err
		}
		if err := p.d.r.check(); err != nil {
			return false, nil // out of time: Decode says what is missing
		}
		cur := c.next
		c.next = nil
		for _, a := range cur {
			if bk := p.view(a, c.bs); bk != nil {
				c.follow(bk)
				c.keyUnits = p.keyUnit(c.keyUnits, bk)
			}
		}
	}
	return true, nil
}

// follow takes the overflow pointer of bucket bk as one to look at in the
// next batch, unless Decode would not follow it (nil, misaligned, seen,
// into the primary array, or past MaxBuckets), and queues the bucket
// unless it is a preallocated one, copied with its array already.
func (c *classicPlan) follow(bk []byte) {
	p, bs := c.p, c.bs
	ovf := le64(bk, bs-8)
	if ovf == 0 || ovf%8 != 0 || p.seen[ovf] || c.units == 0 {
		return
	}
	for _, a := range c.arrays {
		if !a.old && ovf >= a.base && ovf < a.base+a.n*bs {
			return // into the primary array: Decode stops there
		}
	}
	p.seen[ovf] = true
	c.units--
	c.next = append(c.next, ovf)
	for _, a := range c.arrays {
		if ovf >= a.base && ovf+bs <= a.base+a.size {
			return // a preallocated overflow bucket, copied with its array
		}
	}
	p.want(ovf, bs)
}

// plannedArray is a bucket array queued for copying: n buckets, size bytes
// with its preallocated overflow buckets.
type plannedArray struct {
	base, n, size uint64
	old           bool
}

// swiss copies the small group, or the directory, the tables and their
// group arrays.
func (p *planner) swiss() error {
	d := p.d
	h, err := d.swissStart()
	if err != nil {
		return err
	}
	var units [][]byte
	switch {
	case h.DirLen == 0 && h.DirPtr != 0:
		size := uint64(8)
		if d.typ != nil {
			size = d.typ.groupSize
		}
		p.want(h.DirPtr, size)
		if err := p.flush(); err != nil {
			return err
		}
		units = p.keyUnit(units, p.view(h.DirPtr, size))
	case h.DirLen > 0 && h.DirLen <= int64(d.lim.MaxTables):
		n := uint64(h.DirLen)
		need, err := tableOffsets(d.req.Layout.Swiss)
		if !p.want(h.DirPtr, 8*n) || err != nil {
			return nil // Decode reports the limit or the layout
		}
		if err := p.flush(); err != nil {
			return err
		}
		if dir := p.view(h.DirPtr, 8*n); dir != nil {
			var prev uint64
			for j := uint64(0); j < n; j++ {
				if t := le64(dir, 8*j); t != 0 && t != prev && !p.seen[t] {
					p.seen[t] = true
					p.want(t, need.size)
					prev = t
				}
			}
		}
		if err := p.flush(); err != nil {
			return err
		}
		tables, ok := d.swissTables(h) // reads the copied headers
		if !ok {
			return nil
		}
		d.swissGeometry(h, tables)
		if d.typ == nil {
			return nil
		}
		gs := d.typ.groupSize
		left := uint64(d.lim.MaxBuckets)
		for _, t := range tables {
			if t.NotWalked || left == 0 {
				continue
			}
			g := min(t.Groups, left)
			left -= g
			p.want(t.GroupsAddr, g*gs)
		}
		if err := p.flush(); err != nil {
			return err
		}
		if d.req.Keys {
			for _, t := range tables {
				if t.NotWalked {
					continue
				}
				p.each(t.GroupsAddr, t.Groups, gs, func(_ uint64, g []byte) {
					units = p.keyUnit(units, g)
				})
			}
		}
	}
	return p.keys(units, func(i int) (k, e uint64) {
		t := d.typ
		return t.keysOff + uint64(i)*t.keyStride, t.elemsOff + uint64(i)*t.elemStride
	}, func(unit []byte, i int) bool { return byte(le64(unit, 0)>>(8*i))&0x80 == 0 })
}

// keyUnit remembers a bucket or group whose entries Keys asks for.
func (p *planner) keyUnit(units [][]byte, unit []byte) [][]byte {
	if !p.d.req.Keys || p.d.typ == nil || !p.d.typ.known || unit == nil {
		return units
	}
	return append(units, unit)
}

// keys copies what the entries of units point to: indirect keys and
// values, and the text of string keys, at most MaxEntries entries.
func (p *planner) keys(units [][]byte, slots func(i int) (k, e uint64), live func(unit []byte, i int) bool) error {
	t := p.d.typ
	if len(units) == 0 || t == nil {
		return nil
	}
	entries := 0
	for _, u := range units {
		for i := 0; i < bucketCnt; i++ {
			if !live(u, i) {
				continue
			}
			if entries++; entries > p.d.lim.MaxEntries {
				return p.flush()
			}
			k, e := slots(i)
			if k+t.keySlot > uint64(len(u)) || e+t.elemSlot > uint64(len(u)) {
				continue
			}
			key := u[k : k+t.keySlot]
			if t.indirectKey {
				if t.keySize > 0 && t.keySize <= 1<<16 {
					p.want(le64(key, 0), t.keySize)
				}
			} else if t.keyKind == kindString && len(key) >= 16 {
				p.want(le64(key, 0), min(le64(key, 8), uint64(p.d.lim.MaxKeyText)))
			}
			if t.indirectElem && t.elemSize > 0 && t.elemSize <= 1<<16 {
				p.want(le64(u[e:e+t.elemSlot], 0), t.elemSize)
			}
		}
	}
	return p.flush()
}

// Estimate is about how many bytes Copy will copy for req (keys and
// values aside), read from the header and the type while the target
// still runs, so that the caller can set the buffer aside before it holds
// the target (procmem.Copy.Reserve). A map that changes meanwhile only
// makes it a worse guess. It is an upper bound for a map without
// deletions; 0 when the header says nothing usable.
func Estimate(ctx context.Context, mem Memory, req Request) uint64 {
	if mem == nil || req.Layout == nil || req.Addr == 0 {
		return 0
	}
	d := newDecoder(ctx, mem, req, time.Now())
	var n uint64
	switch req.Layout.Maps {
	case goruntime.MapClassic:
		h, walk, err := d.classicStart()
		if err != nil || !walk || h.B >= 40 {
			return 0
		}
		buckets := uint64(1)<<h.B + uint64(h.NOverflow)
		if h.B >= 4 {
			buckets += uint64(1) << (h.B - 4)
		}
		if h.OldBuckets != 0 {
			buckets += uint64(1) << h.B // at most as many old buckets
		}
		n = buckets * d.typ.bucketSize
	case goruntime.MapSwiss:
		h, err := d.swissHeader()
		if err != nil || h.DirLen < 0 || h.DirLen > int64(d.lim.MaxTables) {
			return 0
		}
		d.typ = d.loadType()
		var tables []*swissTable
		if h.DirLen > 0 {
			// The tables' headers (one read each, before the hold) give
			// their group counts: the buffer is then the copy's size,
			// not a bound on it.
			var ok bool
			if tables, ok = d.swissTables(h); ok && d.typ == nil {
				d.swissGeometry(h, tables)
			}
		}
		if d.typ == nil {
			return 0
		}
		// A table is at least 7/16 full after it grew or split: at most
		// used/3.5 groups, and at most 128 groups (1024 slots) a table.
		groups := max(h.Used*2/7, 1)
		if h.DirLen > 0 {
			groups = min(groups, uint64(h.DirLen)*maxTableCapacity/bucketCnt)
		}
		if exact, ok := tableGroups(tables); ok && len(tables) > 0 {
			// Room for a table or two growing before the hold.
			groups = exact + min(exact/32+1, 2*maxTableCapacity/bucketCnt)
		}
		n = groups*d.typ.groupSize + uint64(h.DirLen)*(8+64)
	}
	return min(n, uint64(d.lim.MaxBytes))
}

// tableGroups sums the tables' group counts; ok is false when a table's
// count is unknown or past a table's maximum (a header read mid-change
// or malformed: the estimate from used is kept then).
func tableGroups(tables []*swissTable) (uint64, bool) {
	var n uint64
	for _, t := range tables {
		if t.Groups == 0 || t.Groups > maxTableCapacity/bucketCnt {
			return 0, false
		}
		n += t.Groups
	}
	return n, true
}
