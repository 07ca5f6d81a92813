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

// inferClassic guesses the bucket size from the first buckets.
func (d *decoder) inferClassic(h *ClassicHeader) *mapType {
	n := uint64(1) << h.B
	sample := min(n, 32)
	buf := d.readPrefix(h.Buckets, sample*(16+8*maxInferSlot))
	for s := uint64(1); s <= maxInferSlot; s++ {
		bs := 16 + 8*s
		if sample*bs > uint64(len(buf)) {
			break
		}
		if classicPlausible(buf, sample, bs, h.OldBuckets != 0) {
			d.res.TypeSource = "inferred"
			d.res.Note = joinNote(d.res.Note, fmt.Sprintf("type unknown: bucket size %d inferred from the first %d buckets' consistency; counts and tophash classes only", bs, sample))
			return &mapType{bucketSize: bs}
		}
	}
	return nil
}

// readPrefix reads up to want bytes at addr, halving on failure: the
// allocation may be smaller than the largest candidate.
func (d *decoder) readPrefix(addr, want uint64) []byte {
	for want >= 8 {
		buf := make([]byte, want)
		if err := d.r.read(buf, addr); err == nil {
			return buf
		}
		want /= 2
	}
	return nil
}

func classicPlausible(buf []byte, n, bs uint64, growing bool) bool {
	live := 0
	for i := uint64(0); i < n; i++ {
		b := buf[i*bs : (i+1)*bs]
		rest := false
		for j := 0; j < bucketCnt; j++ {
			th := b[j]
			switch {
			case th == emptyRest:
				rest = true
			case th < minTopHash && th != emptyOne && !growing:
				return false
			case th >= minTopHash:
				if rest {
					return false
				}
				live++
			}
		}
		if ovf := le64(b, bs-8); ovf != 0 && (ovf%8 != 0 || ovf < 1<<16 || ovf >= 1<<56) {
			return false
		}
	}
	return live > 0
}

// inferSwiss guesses the group size from the first table with entries,
// requiring legal control bytes and an exact match of its used count.
func (d *decoder) inferSwiss(tables []*swissTable) {
	for _, t := range tables {
		if t.NotWalked || t.Used == 0 || t.Groups > maxTableCapacity/bucketCnt*4 {
			continue
		}
		buf := d.readPrefix(t.GroupsAddr, t.Groups*(8+8*maxInferSlot))
		for s := uint64(1); s <= maxInferSlot; s++ {
			gs := 8 + 8*s
			if t.Groups*gs > uint64(len(buf)) {
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
