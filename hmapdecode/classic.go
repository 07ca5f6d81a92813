package hmapdecode

import (
	"fmt"
)

// chunkBytes is the size of one bulk read of a bucket or group array.
const chunkBytes = 4 << 20

// maxChainHist is the last cell of Stats.ChainHist (chains of that many
// overflow buckets or more).
const maxChainHist = 16

// classic decodes runtime.hmap (Go 1.19–1.23; 1.24/1.25 noswissmap).
//
// Runtime facts used (runtime/map.go, unchanged 1.19–1.25): 2^B buckets of
// tophash[8], keys[8], elems[8], overflow pointer; B >= 4 preallocates
// 2^(B-4) overflow buckets right after the array; during growth, oldbuckets
// holds 2^(B-1) buckets (2^B for a same-size grow) and an old bucket whose
// tophash[0] is 2..4 has been evacuated; entries live either in an
// unevacuated old bucket or in the new array, never both.
func (d *decoder) classic() error {
	h, walk, err := d.classicStart()
	if err != nil || !walk {
		return err
	}
	n := uint64(1) << h.B
	d.res.Stats.Buckets = n
	d.res.Stats.ChainHist = make([]int64, maxChainHist+1)
	d.res.Stats.AvgPerBucket = float64(h.Count) / float64(n)
	w := &classicWalk{d: d, h: h, visited: map[uint64]uint32{}}

	// Growth first: it tells the new-array walk which buckets must still be
	// empty.
	if h.OldBuckets != 0 || h.Flags&flagSameSizeGrow != 0 {
		w.growth()
	}
	d.occ.init(int(min(n, uint64(d.lim.MaxBuckets))))
	w.walkArray(h.Buckets, h.B, false)

	if d.res.Stats.EntriesFound != h.Count && !d.stop {
		sev := SevError
		if h.Flags&flagHashWriting != 0 {
			sev = SevWarning
		}
		d.anomaly(CodeCountMismatch, sev, "header", "count %d, found %d live entries", h.Count, d.res.Stats.EntriesFound)
	}
	return nil
}

// classicStart reads the header and the slot geometry; walk says whether
// there are buckets to walk with a known (or inferred) geometry.
func (d *decoder) classicStart() (h *ClassicHeader, walk bool, err error) {
	if h, err = d.classicHeader(); err != nil {
		return nil, false, err
	}
	if h.B >= 64 {
		return h, false, nil
	}
	if h.Buckets == 0 {
		if h.Count != 0 {
			d.anomaly(CodeHeader, SevError, "header", "count %d but no bucket array", h.Count)
		}
		if h.OldBuckets != 0 {
			d.anomaly(CodeOldBuckets, SevError, "header", "oldbuckets %#x without buckets", h.OldBuckets)
		}
		d.res.TypeSource = "none"
		if d.req.TypeAddr != 0 {
			if d.typ = d.loadType(); d.typ != nil {
				d.res.TypeSource = "descriptor"
			}
		}
		return h, false, nil
	}
	d.classicType(h)
	return h, d.typ != nil, nil
}

// classicType sets the slot geometry: from the type descriptor, else
// inferred from the buckets; d.typ stays nil when neither works.
func (d *decoder) classicType(h *ClassicHeader) {
	d.typ = d.loadType()
	if d.typ != nil {
		d.res.TypeSource = "descriptor"
	} else {
		d.typ = d.inferClassic(h)
	}
	if d.typ == nil {
		d.res.TypeSource = "none"
		d.res.Note = joinNote(d.res.Note, "type unknown and bucket size not inferable: header only")
		return
	}
	h.BucketSize, h.KeySize, h.ElemSize = d.typ.bucketSize, d.typ.keySlot, d.typ.elemSlot
}

// classicHeader reads and checks runtime.hmap, and records its flags.
func (d *decoder) classicHeader() (*ClassicHeader, error) {
	c := d.req.Layout.Classic
	var o struct{ size, count, flags, b, nov, hash0, buckets, old, nevac, extra uint64 }
	var err error
	for _, f := range []struct {
		dst  *uint64
		name string
		v    interface{ Get(string) (uint64, error) }
	}{
		{&o.size, "hmap size", c.HeaderSize}, {&o.count, "hmap.count", c.Count}, {&o.flags, "hmap.flags", c.Flags},
		{&o.b, "hmap.B", c.B}, {&o.nov, "hmap.noverflow", c.NOverflow}, {&o.hash0, "hmap.hash0", c.Hash0},
		{&o.buckets, "hmap.buckets", c.Buckets}, {&o.old, "hmap.oldbuckets", c.OldBuckets},
		{&o.nevac, "hmap.nevacuate", c.NEvacuate}, {&o.extra, "hmap.extra", c.Extra},
	} {
		if *f.dst, err = f.v.Get(f.name); err != nil {
			return nil, fmt.Errorf("decode map at %#x: %w: %w", d.req.Addr, ErrLayout, err)
		}
	}
	if o.size < 48 || o.size > 256 {
		return nil, fmt.Errorf("decode map at %#x: hmap size %d: %w", d.req.Addr, o.size, ErrLayout)
	}
	buf := make([]byte, o.size)
	if err := d.r.read(buf, d.req.Addr); err != nil {
		return nil, fmt.Errorf("read hmap header at %#x: %w: %w", d.req.Addr, ErrHeader, err)
	}
	h := &ClassicHeader{
		Count:      int64(le64(buf, o.count)),
		Flags:      u8(buf, o.flags),
		B:          u8(buf, o.b),
		NOverflow:  le16(buf, o.nov),
		Hash0:      le32(buf, o.hash0),
		Buckets:    le64(buf, o.buckets),
		OldBuckets: le64(buf, o.old),
		NEvacuate:  le64(buf, o.nevac),
		Extra:      le64(buf, o.extra),
	}
	if c.ClearSeq.Known() {
		h.ClearSeq = le64(buf, uint64(c.ClearSeq))
	}
	d.res.Classic = h
	d.res.Count = h.Count
	for _, f := range []struct {
		bit  uint8
		name string
	}{{flagIterator, "iterator"}, {flagOldIterator, "oldIterator"}, {flagHashWriting, "hashWriting"}, {flagSameSizeGrow, "sameSizeGrow"}} {
		if h.Flags&f.bit != 0 {
			d.res.Flags = append(d.res.Flags, f.name)
		}
	}
	if h.Flags&flagHashWriting != 0 {
		d.anomaly(CodeWritingFlag, SevWarning, "header", "hashWriting is set: a write was in progress")
		if h.Flags&(flagIterator|flagOldIterator) != 0 {
			d.anomaly(CodeIteratorDuringWrite, SevInfo, "header", "iterator flags %#x set while writing", h.Flags&(flagIterator|flagOldIterator))
		}
	}
	if h.Flags&^0xF != 0 {
		d.anomaly(CodeHeader, SevWarning, "header", "unknown flag bits %#x", h.Flags&^0xF)
	}
	if h.Count < 0 {
		d.anomaly(CodeHeader, SevError, "header", "negative count %d", h.Count)
	}
	if h.B >= 64 {
		d.anomaly(CodeHeader, SevError, "header", "B = %d: not a bucket count", h.B)
	}
	return h, nil
}

// classicWalk is the state of one walk over a classic map's buckets.
type classicWalk struct {
	d *decoder
	h *ClassicHeader
	// visited maps each overflow bucket address to the chain (1-based)
	// that reached it first: cycles and shared buckets show up here.
	visited map[uint64]uint32
	// before is the visited map of the walk this one continues (the old
	// array's, for a range of the current array walked in parallel); it is
	// only read.
	before  map[uint64]uint32
	chainID uint32
	// pending marks old buckets not yet evacuated (bit per old bucket).
	pending []uint64
	oldMask uint64
}

// bucketArray is one bucket array with the preallocated overflow buckets
// that follow it, read once so chains into them need no extra syscall.
type bucketArray struct {
	base, n  uint64
	prealloc []byte
	preBase  uint64
}

func (w *classicWalk) newArray(base uint64, b uint8) *bucketArray {
	a := &bucketArray{base: base, n: uint64(1) << b}
	bs := w.d.typ.bucketSize
	if b >= 4 {
		extra := uint64(1) << (b - 4)
		if extra*bs <= chunkBytes*4 && extra*bs <= w.d.r.room() && w.d.units+int(extra) <= w.d.lim.MaxBuckets {
			var buf []byte
			a.preBase = base + a.n*bs
			if b, err := w.d.r.readView(&buf, extra*bs, a.preBase); err == nil {
				a.prealloc = b
			}
		}
	}
	return a
}

// overflowBucket returns the bytes of the bucket at addr, from the
// preallocated block when it lies there.
func (w *classicWalk) overflowBucket(a *bucketArray, addr uint64, scratch []byte) ([]byte, error) {
	bs := w.d.typ.bucketSize
	if a.prealloc != nil && addr >= a.preBase && addr-a.preBase < uint64(len(a.prealloc)) && (addr-a.preBase)%bs == 0 {
		o := addr - a.preBase
		return a.prealloc[o : o+bs], nil
	}
	return w.d.r.readView(&scratch, bs, addr)
}

// walkArray walks buckets 0..2^b-1 of the array at base and their chains.
// old marks the old array of a growing map: evacuated buckets are counted,
// not walked.
func (w *classicWalk) walkArray(base uint64, b uint8, old bool) {
	d := w.d
	if err := d.takeUnits(0); err != nil {
		return
	}
	arr := w.newArray(base, b)
	n := uint64(1) << b
	bs := d.typ.bucketSize
	// Buckets per bulk read. Parallel ranges start on these boundaries,
	// so that what is reported per read is the same for any split.
	per := max(d.lim.chunk()/bs, 1)
	per = min(per, max(w.d.r.room()/bs, 1), uint64(max(d.lim.MaxBuckets-d.units, 1)))
	if !old && w.walkParallel(arr, n, per) {
		return
	}
	w.walkRange(arr, 0, n, per, old, true)
}

// walkRange walks buckets [from, to) of arr and their chains, per buckets
// a read, reserving the buckets against MaxBuckets when reserve is set.
func (w *classicWalk) walkRange(arr *bucketArray, from, to, per uint64, old, reserve bool) {
	d := w.d
	bs := d.typ.bucketSize
	base := arr.base
	prefix := "b"
	if old {
		prefix = "old.b"
	}
	var buf []byte
	scratch := make([]byte, bs)
	for first := from; first < to; first += per {
		cnt := min(per, to-first)
		if reserve {
			if err := d.takeUnits(int(cnt)); err != nil {
				d.truncate(fmt.Sprintf("%s%d", prefix, first), err)
				return
			}
		}
		chunk, err := d.r.readView(&buf, cnt*bs, base+first*bs)
		if err != nil {
			d.readFailed(CodeUnreadable, fmt.Sprintf("%s%d-%d", prefix, first, first+cnt-1), fmt.Errorf("bucket array: %w", err))
			if d.stop {
				return
			}
			continue
		}
		for i := uint64(0); i < cnt; i++ {
			idx := first + i
			bk := chunk[i*bs : (i+1)*bs]
			if old {
				if th := bk[0]; th > emptyOne && th < minTopHash {
					w.evacuated(bk, idx)
					continue
				}
				w.d.res.Growth.Pending++
				w.pending[idx/64] |= 1 << (idx % 64)
				if idx < w.h.NEvacuate {
					d.anomaly(CodeOldBuckets, SevError, fmt.Sprintf("old.b%d", idx), "old bucket below nevacuate %d is not evacuated", w.h.NEvacuate)
				}
			}
			live := w.chain(arr, bk, idx, old, scratch)
			if old {
				w.d.res.Growth.EntriesInOld += int64(live)
			} else {
				d.occ.add(int(idx), live)
				if live > 0 && w.pending != nil && w.pending[(idx&w.oldMask)/64]&(1<<((idx&w.oldMask)%64)) != 0 {
					d.anomaly(CodeOldBuckets, SevError, fmt.Sprintf("b%d", idx), "holds %d entries while old bucket %d is not evacuated", live, idx&w.oldMask)
				}
			}
			if d.stop {
				return
			}
		}
	}
}

// walkParallel walks the current bucket array in ranges on several
// goroutines. It returns false, having changed nothing, when the walk
// should be one: a small map, a limit in reach, or forks that disagree
// (an overflow bucket reached from two ranges, a limit hit), which only a
// single walk reports exactly.
func (w *classicWalk) walkParallel(arr *bucketArray, n, per uint64) bool {
	d := w.d
	chunks := (n + per - 1) / per
	k := int(min(uint64(d.workers(n)), chunks))
	if k <= 1 || d.units+int(n) > d.lim.MaxBuckets || n*d.typ.bucketSize > d.r.room() {
		return false
	}
	bytes0, calls0 := d.r.bytes.Load(), d.r.calls.Load()
	d.units += int(n) // every primary bucket, reserved at once
	forks := make([]*decoder, k)
	walks := make([]*classicWalk, k)
	for i := range forks {
		forks[i] = d.fork()
		walks[i] = &classicWalk{d: forks[i], h: w.h, visited: map[uint64]uint32{}, before: w.visited,
			pending: w.pending, oldMask: w.oldMask}
	}
	run(forks, func(i int, f *decoder) {
		from, to := chunks*uint64(i)/uint64(k)*per, min(chunks*uint64(i+1)/uint64(k)*per, n)
		walks[i].walkRange(arr, from, to, per, false, false)
	})
	ok := true
	units := d.units
	seen := make(map[uint64]bool)
	for i, f := range forks {
		if f.stop && !d.outOfTime() {
			ok = false // a limit: where it falls depends on the order
		}
		units += f.units - f.unitsBase
		for a := range walks[i].visited {
			if seen[a] {
				ok = false // a shared overflow bucket: one walk names it
			}
			seen[a] = true
		}
	}
	if !ok || units > d.lim.MaxBuckets {
		d.units -= int(n)
		d.r.bytes.Store(bytes0)
		d.r.calls.Store(calls0)
		return false
	}
	for _, f := range forks {
		d.join(f)
	}
	return true
}

// evacuated checks an evacuated old bucket: every slot must hold a marker.
func (w *classicWalk) evacuated(bk []byte, idx uint64) {
	w.d.res.Growth.Evacuated++
	for i := 0; i < bucketCnt; i++ {
		if bk[i] >= minTopHash {
			w.d.anomaly(CodeEvacuatedMixed, SevError, fmt.Sprintf("old.b%d.s%d", idx, i), "evacuated bucket still has live tophash %#x", bk[i])
			return
		}
	}
}

// chain walks one bucket and its overflow chain and returns its live count.
func (w *classicWalk) chain(arr *bucketArray, bk []byte, idx uint64, old bool, scratch []byte) int {
	d := w.d
	bs := d.typ.bucketSize
	w.chainID++
	c := &chainScan{prefix: "b", idx: idx, old: old}
	if old {
		c.prefix = "old.b"
	}
	for pos := 0; ; pos++ {
		inBucket := w.bucketSlots(c, bk, pos)
		d.res.Stats.OccupancyHist[inBucket]++
		d.res.Stats.Slots += bucketCnt
		ovf := le64(bk, bs-8)
		if ovf == 0 {
			w.chainDone(pos)
			return c.live
		}
		next, ok := w.overflow(arr, ovf, fmt.Sprintf("%s%d.o%d", c.prefix, idx, pos), pos, scratch)
		if !ok {
			w.chainDone(pos)
			return c.live
		}
		d.res.Stats.Overflow++
		bk = next
	}
}

// chainScan is what the walk of one chain carries from bucket to bucket:
// which bucket heads it (for anomaly locations), the live entries so
// far, and whether an emptyRest was seen — a live slot after one, even in
// a later bucket of the chain, is one that lookups never reach.
type chainScan struct {
	prefix            string // "b", or "old.b" in the old array
	idx               uint64
	old               bool
	live              int
	sawRest, reported bool
}

// where names slot i of the pos-th bucket of the chain; it is built only
// for an anomaly or an entry, not once per slot.
func (c *chainScan) where(pos, i int) string {
	return fmt.Sprintf("%s%d.o%d.s%d", c.prefix, c.idx, pos, i)
}

// bucketSlots classifies the eight tophash bytes of bk, the pos-th bucket
// of the chain, reports the anomalies they show and (with Keys) collects
// the entries of the live slots; it returns the bucket's live count.
func (w *classicWalk) bucketSlots(c *chainScan, bk []byte, pos int) (inBucket int) {
	d := w.d
	for i := 0; i < bucketCnt; i++ {
		th := bk[i]
		switch {
		case th == emptyRest:
			d.slots[slotEmptyRest]++
			c.sawRest = true
		case th == emptyOne:
			d.slots[slotEmptyOne]++
			d.res.Stats.Tombstones++
		case th < minTopHash:
			d.slots[slotEvacuatedX+int(th)-evacuatedX]++
			if i == 0 && !c.old {
				d.anomaly(CodeEvacuatedInLive, SevError, c.where(pos, i), "evacuated marker %d in the current bucket array", th)
			} else {
				d.anomaly(CodeTopHashBelowMin, SevError, c.where(pos, i), "tophash %d below minTopHash in a live bucket", th)
			}
		default:
			d.slots[slotLive]++
			d.res.Stats.HashHist[th>>5]++
			if c.sawRest && !c.reported {
				c.reported = true
				d.anomaly(CodeEmptyRestThenLive, SevError, c.where(pos, i), "live slot after emptyRest: lookups stop before it")
			}
			c.live++
			inBucket++
			d.res.Stats.EntriesFound++
			if d.req.Keys {
				w.entry(bk, i, c.where(pos, i), c.old)
			}
		}
	}
	return inBucket
}

// overflow follows the overflow pointer ovf of the pos-th bucket of a
// chain (named where) and returns the next bucket, or false where the
// chain must end: at MaxChain, at a pointer that is misaligned, into the
// primary array, to a bucket another chain (or this one: a cycle)
// reached already, past MaxBuckets, or unreadable. Each is reported.
func (w *classicWalk) overflow(arr *bucketArray, ovf uint64, where string, pos int, scratch []byte) ([]byte, bool) {
	d := w.d
	bs := d.typ.bucketSize
	if pos+1 > d.lim.MaxChain {
		d.truncate(where, fmt.Errorf("overflow chain longer than %d: %w", d.lim.MaxChain, errLimit))
		return nil, false
	}
	if ovf%8 != 0 {
		d.anomaly(CodeOverflowUnmapped, SevError, where, "overflow pointer %#x misaligned", ovf)
		return nil, false
	}
	if ovf >= arr.base && ovf < arr.base+arr.n*bs {
		d.anomaly(CodeOverflowShared, SevError, where, "overflow pointer %#x points into the primary bucket array", ovf)
		return nil, false
	}
	if _, seen := w.before[ovf]; seen {
		d.anomaly(CodeOverflowShared, SevError, where, "overflow bucket %#x already reached by another chain", ovf)
		return nil, false
	}
	if owner, seen := w.visited[ovf]; seen {
		if owner == w.chainID {
			d.anomaly(CodeOverflowCycle, SevError, where, "overflow chain returns to %#x", ovf)
		} else {
			d.anomaly(CodeOverflowShared, SevError, where, "overflow bucket %#x already reached by another chain", ovf)
		}
		return nil, false
	}
	if err := d.takeUnits(1); err != nil {
		d.truncate(where, err)
		return nil, false
	}
	w.visited[ovf] = w.chainID
	next, err := w.overflowBucket(arr, ovf, scratch)
	if err != nil {
		d.readFailed(CodeOverflowUnmapped, where, fmt.Errorf("overflow bucket %#x: %w", ovf, err))
		return nil, false
	}
	return next, true
}

func (w *classicWalk) chainDone(overflows int) {
	s := &w.d.res.Stats
	s.ChainHist[min(overflows, maxChainHist)]++
	if overflows > s.MaxChain {
		s.MaxChain = overflows
	}
}

// entry copies the key and elem of slot i of a classic bucket.
func (w *classicWalk) entry(bk []byte, i int, where string, old bool) {
	t := w.d.typ
	if !t.known {
		return
	}
	k := 8 + uint64(i)*t.keySlot
	e := 8 + bucketCnt*t.keySlot + uint64(i)*t.elemSlot
	w.d.addEntry(bk, k, e, where, old)
}

// addEntry appends the entry whose key and elem slots are at k and e in
// unit (a bucket or group), following indirect slots.
func (d *decoder) addEntry(unit []byte, k, e uint64, where string, old bool) {
	t := d.typ
	if len(d.res.Entries) >= d.lim.MaxEntries {
		if !d.entriesCut {
			d.entriesCut = true
			d.res.Truncated = true
			d.anomaly(CodeTruncated, SevWarning, where, "more than %d entries: keys and values of the rest not returned", d.lim.MaxEntries)
		}
		return
	}
	if k+t.keySlot > uint64(len(unit)) || e+t.elemSlot > uint64(len(unit)) {
		return
	}
	ent := Entry{Where: where, Old: old}
	ent.Key = d.slotBytes(unit[k:k+t.keySlot], t.indirectKey, t.keySize)
	ent.Elem = d.slotBytes(unit[e:e+t.elemSlot], t.indirectElem, t.elemSize)
	ent.KeyString = d.keyText(ent.Key)
	d.res.Entries = append(d.res.Entries, ent)
}

// slotBytes copies a slot, reading through the pointer of an indirect one.
func (d *decoder) slotBytes(slot []byte, indirect bool, size uint64) Hex {
	if !indirect {
		return append(Hex(nil), slot...)
	}
	if size == 0 || size > 1<<16 {
		return nil
	}
	out := make([]byte, size)
	if err := d.r.read(out, le64(slot, 0)); err != nil {
		return nil
	}
	return out
}

// growth decodes the incremental-growth state and walks old buckets that
// still hold entries.
func (w *classicWalk) growth() {
	d, h := w.d, w.h
	sameSize := h.Flags&flagSameSizeGrow != 0
	g := &Growth{Growing: h.OldBuckets != 0, SameSize: sameSize, NEvacuate: h.NEvacuate}
	d.res.Growth = g
	if h.OldBuckets == 0 {
		d.anomaly(CodeOldBuckets, SevWarning, "header", "sameSizeGrow set but no oldbuckets")
		return
	}
	oldB := h.B
	if !sameSize {
		if h.B == 0 {
			d.anomaly(CodeOldBuckets, SevError, "header", "oldbuckets %#x with B = 0", h.OldBuckets)
			return
		}
		oldB = h.B - 1
	}
	oldN := uint64(1) << oldB
	g.OldBuckets = oldN
	if h.OldBuckets == h.Buckets {
		d.anomaly(CodeOldBuckets, SevError, "header", "oldbuckets equals buckets %#x", h.Buckets)
		return
	}
	if h.NEvacuate > oldN {
		d.anomaly(CodeOldBuckets, SevError, "header", "nevacuate %d beyond %d old buckets", h.NEvacuate, oldN)
	} else if h.NEvacuate == oldN {
		d.anomaly(CodeOldBuckets, SevWarning, "header", "every old bucket evacuated (nevacuate %d) but oldbuckets not released", oldN)
	}
	if oldN > uint64(d.lim.MaxBuckets) {
		d.truncate("old", fmt.Errorf("%d old buckets: %w", oldN, errLimit))
		return
	}
	w.pending = make([]uint64, (oldN+63)/64)
	w.oldMask = oldN - 1
	w.walkArray(h.OldBuckets, oldB, true)
	if oldN > 0 {
		g.ProgressPermil = int(g.Evacuated * 1000 / oldN)
	}
}
