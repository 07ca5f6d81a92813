package hmapdecode

import "fmt"

// Geometry inference for a map whose type descriptor is unknown (the CLI
// given only an address). A bucket is 8 + 8*(keySlot+elemSlot) + 8 bytes
// and a group 8 + 8*slotBytes, so one number — the slot bytes s — decides
// where every tophash byte, overflow pointer and control word lies. We try
// s = 1..256 against a sample of the map's own memory and keep the
// smallest s under which that memory is self-consistent: for Swiss, every
// control byte legal and the full count equal to the table's own used
// count; for classic, tophash runs legal and every overflow word nil or a
// plausible pointer. Keys and values cannot be split without the type, so
// an inferred decode counts and classifies but returns no entries.

const maxInferSlot = 2 * maxSlotBytes

// inferSample is how many buckets classic inference looks at: enough that
// the count a right size predicts is within a few percent of the header's
// (32 were not: at 1M entries the true size's estimate was often off by
// more than a wrong multiple's, which then won).
const inferSample = 1024

// inferClassic guesses the bucket size from the first buckets.
func (d *decoder) inferClassic(h *ClassicHeader) *mapType {
	n := uint64(1) << h.B
	sample := min(n, inferSample)
	p := &prefix{d: d, addr: h.Buckets, first: sample * (16 + 8*maxInferSlot)}
	// Among self-consistent sizes, prefer those whose sample predicts the
	// header's count well (zero bytes of small keys make some wrong sizes
	// look consistent), and among those the smallest: a multiple of the
	// true size is always consistent too, since its "buckets" start on
	// real ones.
	type cand struct {
		bs  uint64
		err int64
	}
	var cands []cand
	bestErr := int64(-1)
	for s := uint64(1); s <= maxInferSlot; s++ {
		bs := 16 + 8*s
		buf := p.get(sample * bs)
		if buf == nil {
			break
		}
		live, ok := classicPlausible(buf, sample, bs, h.OldBuckets != 0)
		if !ok {
			continue
		}
		est := int64(live) * int64(n/sample)
		e := max(est-h.Count, h.Count-est)
		cands = append(cands, cand{bs, e})
		if bestErr < 0 || e < bestErr {
			bestErr = e
		}
	}
	best := uint64(0)
	for _, c := range cands {
		if c.err <= max(bestErr+bestErr/2, h.Count/8) {
			best = c.bs
			break
		}
	}
	if best == 0 {
		return nil
	}
	d.res.TypeSource = "inferred"
	d.res.Note = joinNote(d.res.Note, fmt.Sprintf("type unknown: bucket size %d inferred from the first %d buckets' consistency (best effort: a count_mismatch anomaly means it guessed wrong); counts and tophash classes only", best, sample))
	return &mapType{bucketSize: best}
}

// prefix reads a growing prefix of the memory at addr: the allocation may
// be smaller than the largest candidate, so it grows geometrically and
// settles for exactly what a candidate needs when a larger read fails.
// When first, the most any candidate needs, is set, that is tried first:
// a large map has it, and one read of it replaces a dozen growing ones
// (each kept by a copier, and each a buffer of its own). On a copy that
// hands out its bytes (procmem.Image), the prefix is read in place; while
// copying (a Copier), it is copied into the copy first, then read there.
type prefix struct {
	d     *decoder
	addr  uint64
	first uint64
	buf   []byte
	dead  bool
}

// get returns at least n bytes, or nil once memory (or the budget) ends.
func (p *prefix) get(n uint64) []byte {
	if uint64(len(p.buf)) >= n {
		return p.buf
	}
	if p.dead || n > p.d.r.room() {
		return nil
	}
	wants := []uint64{max(n, 2*uint64(len(p.buf))), n}
	if p.first > n && len(p.buf) == 0 {
		wants = append([]uint64{p.first}, wants...)
	}
	for _, want := range wants {
		want = min(want, p.d.r.room())
		if want < n {
			continue
		}
		if v := p.d.r.view; v != nil && p.d.r.admit(int(want), p.addr) == nil {
			b, ok := v.View(p.addr, want)
			if c, copier := p.d.r.mem.(Copier); !ok && copier {
				// Copying (the process held): into the copy, where
				// the bucket array goes anyway, then in place — not
				// megabytes on the heap while the process waits.
				c.Want(p.addr, want)
				if c.Flush() == nil {
					b, ok = v.View(p.addr, want)
				}
			}
			if ok {
				p.d.r.calls.Add(1)
				p.d.r.bytes.Add(int64(want))
				p.buf = b
				return b
			}
		}
		buf := make([]byte, want)
		if err := p.d.r.read(buf, p.addr); err == nil {
			p.buf = buf
			return buf
		}
	}
	p.dead = true
	return nil
}

func classicPlausible(buf []byte, n, bs uint64, growing bool) (int, bool) {
	live := 0
	for i := uint64(0); i < n; i++ {
		b := buf[i*bs : (i+1)*bs]
		rest := false
		for j := 0; j < bucketCnt; j++ {
			th := b[j]
			switch {
			case th == emptyRest:
				rest = true
			case rest:
				return 0, false // only emptyRest may follow emptyRest
			case th < minTopHash && th != emptyOne && !growing:
				return 0, false
			case th >= minTopHash:
				live++
			}
		}
		if ovf := le64(b, bs-8); ovf != 0 && (ovf%8 != 0 || ovf < 1<<16 || ovf >= 1<<56) {
			return 0, false
		}
	}
	return live, live > 0
}

// inferSwiss guesses the group size from the first table with entries,
// requiring legal control bytes and an exact match of its used count.
func (d *decoder) inferSwiss(tables []*swissTable) {
	for _, t := range tables {
		if t.NotWalked || t.Used == 0 || t.Groups > maxTableCapacity/bucketCnt*4 {
			continue
		}
		p := &prefix{d: d, addr: t.GroupsAddr}
		for s := uint64(1); s <= maxInferSlot; s++ {
			gs := 8 + 8*s
			buf := p.get(t.Groups * gs)
			if buf == nil {
				break
			}
			if swissPlausible(buf, t.Groups, gs, int(t.Used)) {
				d.typ = &mapType{groupSize: gs}
				d.res.TypeSource = "inferred"
				d.res.Note = joinNote(d.res.Note, fmt.Sprintf("type unknown: group size %d inferred from table %d (control bytes legal, full count equals its used %d); counts and control classes only", gs, t.DirIndex, t.Used))
				return
			}
		}
		return
	}
}

func swissPlausible(buf []byte, groups, gs uint64, used int) bool {
	full := 0
	for g := uint64(0); g < groups; g++ {
		ctrl := le64(buf, g*gs)
		for i := 0; i < bucketCnt; i++ {
			c := byte(ctrl >> (8 * i))
			switch {
			case c&0x80 == 0:
				full++
			case c != ctrlEmpty && c != ctrlDeleted:
				return false
			}
		}
	}
	return full == used
}
