package hmapdecode

import (
	"fmt"
	"math/bits"

	"github.com/mapsentry/mapsentry/goruntime"
)

// swiss decodes internal/runtime/maps.Map (Go 1.24–1.27).
//
// Runtime facts used (internal/runtime/maps, 1.24–1.27): dirLen == 0 means
// dirPtr is one group of at most 8 entries (a small map); otherwise dirPtr
// is [dirLen]*table, dirLen == 1<<globalDepth, globalShift == 64 -
// globalDepth, and a table of localDepth L fills 2^(globalDepth-L)
// consecutive slots starting at its index. A group is an 8-byte control
// word (byte i for slot i: 0x80 empty, 0xFE deleted, 0b0hhhhhhh full) and
// 8 slots. Per table, used + growthLeft + tombstones == capacity*7/8
// (capacity-1 up to one group).
func (d *decoder) swiss() error {
	h, err := d.swissStart()
	if err != nil {
		return err
	}

	switch {
	case h.DirLen == 0:
		d.swissSmall(h)
	case h.DirLen < 0:
		d.anomaly(CodeHeader, SevError, "header", "negative dirLen %d", h.DirLen)
	default:
		d.swissDirectory(h)
	}
	if d.res.TypeSource == "" {
		d.res.TypeSource = "none"
	}
	if d.res.Stats.EntriesFound != int64(h.Used) && !d.stop && (h.DirPtr != 0 || h.Used != 0) {
		sev := SevError
		if h.Writing != 0 {
			sev = SevWarning
		}
		d.anomaly(CodeCountMismatch, sev, "header", "used %d, found %d live entries", h.Used, d.res.Stats.EntriesFound)
	}
	return nil
}

// swissStart reads the header and the type descriptor.
func (d *decoder) swissStart() (*SwissHeader, error) {
	h, err := d.swissHeader()
	if err != nil {
		return nil, err
	}
	d.typ = d.loadType()
	if d.typ != nil {
		d.res.TypeSource = "descriptor"
		h.GroupSize = d.typ.groupSize
	}
	return h, nil
}

// swissHeader reads and checks maps.Map, and records its flags.
func (d *decoder) swissHeader() (*SwissHeader, error) {
	s := d.req.Layout.Swiss
	var o struct{ size, used, seed, dirPtr, dirLen, gd, gs, writing, clearSeq uint64 }
	var err error
	for _, f := range []struct {
		dst  *uint64
		name string
		v    interface{ Get(string) (uint64, error) }
	}{
		{&o.size, "Map size", s.HeaderSize}, {&o.used, "Map.used", s.Used}, {&o.seed, "Map.seed", s.Seed},
		{&o.dirPtr, "Map.dirPtr", s.DirPtr}, {&o.dirLen, "Map.dirLen", s.DirLen},
		{&o.gd, "Map.globalDepth", s.GlobalDepth}, {&o.gs, "Map.globalShift", s.GlobalShift},
		{&o.writing, "Map.writing", s.Writing}, {&o.clearSeq, "Map.clearSeq", s.ClearSeq},
	} {
		if *f.dst, err = f.v.Get(f.name); err != nil {
			return nil, fmt.Errorf("decode map at %#x: %w: %w", d.req.Addr, ErrLayout, err)
		}
	}
	if o.size < 40 || o.size > 256 {
		return nil, fmt.Errorf("decode map at %#x: Map size %d: %w", d.req.Addr, o.size, ErrLayout)
	}
	buf := make([]byte, o.size)
	if err := d.r.read(buf, d.req.Addr); err != nil {
		return nil, fmt.Errorf("read maps.Map header at %#x: %w: %w", d.req.Addr, ErrHeader, err)
	}
	h := &SwissHeader{
		Used:        le64(buf, o.used),
		Seed:        le64(buf, o.seed),
		DirPtr:      le64(buf, o.dirPtr),
		DirLen:      int64(le64(buf, o.dirLen)),
		GlobalDepth: u8(buf, o.gd),
		GlobalShift: u8(buf, o.gs),
		Writing:     u8(buf, o.writing),
		ClearSeq:    le64(buf, o.clearSeq),
	}
	if s.TombstonePossible.Known() {
		tp := u8(buf, uint64(s.TombstonePossible)) != 0
		h.TombstonePossible = &tp
	}
	d.res.Swiss = h
	d.res.Count = int64(h.Used)
	if h.Writing != 0 {
		d.res.Flags = append(d.res.Flags, "writing")
		d.anomaly(CodeWritingFlag, SevWarning, "header", "writing = %d: a write was in progress", h.Writing)
		if h.Writing > 1 {
			d.anomaly(CodeHeader, SevWarning, "header", "writing = %d; writers toggle it between 0 and 1", h.Writing)
		}
	}
	if h.TombstonePossible != nil && *h.TombstonePossible {
		d.res.Flags = append(d.res.Flags, "tombstonePossible")
	}
	if int64(h.Used) < 0 {
		d.anomaly(CodeHeader, SevError, "header", "used %d overflows int", h.Used)
	}

	return h, nil
}

// swissSmall decodes a small map: dirPtr is a single group, no table.
func (d *decoder) swissSmall(h *SwissHeader) {
	h.Small = true
	if h.DirPtr == 0 {
		if h.Used != 0 {
			d.anomaly(CodeHeader, SevError, "header", "used %d but no group", h.Used)
		}
		return
	}
	if h.Used > bucketCnt {
		d.anomaly(CodeHeader, SevError, "header", "small map (dirLen 0) with used %d > 8", h.Used)
	}
	size := uint64(8)
	if d.typ != nil {
		size = d.typ.groupSize
	} else {
		d.res.Note = joinNote(d.res.Note, "type unknown: small-map entries counted from control bytes, keys and values not decoded")
	}
	if err := d.takeUnits(1); err != nil {
		d.truncate("small", err)
		return
	}
	g := make([]byte, size)
	if err := d.r.read(g, h.DirPtr); err != nil {
		d.readFailed(CodeUnreadable, "small", fmt.Errorf("small-map group at %#x: %w", h.DirPtr, err))
		return
	}
	d.res.Stats.Groups = 1
	d.occ.init(1)
	full, _ := d.group(g, -1, 0)
	d.occ.add(0, full)
}

// group classifies one group's control bytes, collects entries, and
// returns the full and deleted counts. where names the group: table
// (first directory slot, -1 for the small map) and group index; the text
// is built only when needed, not once per group.
func (d *decoder) group(g []byte, table int, gi uint64) (full, deleted int) {
	ctrl := le64(g, 0)
	st := &d.res.Stats
	if !d.req.Keys {
		// The common case on a word at a time: full bytes have the high
		// bit clear; the rest must each be empty (0x80) or deleted
		// (0xFE), else the byte-by-byte walk below names the illegal one.
		fullMask := ^ctrl & hiBits
		empty := zeroBytes(ctrl ^ (ctrlEmpty * loBits))
		del := zeroBytes(ctrl ^ (ctrlDeleted * loBits))
		nFull := bits.OnesCount64(fullMask)
		nEmpty, nDel := bits.OnesCount64(empty), bits.OnesCount64(del)
		if nFull+nEmpty+nDel == bucketCnt {
			for m := fullMask; m != 0; m &= m - 1 {
				st.HashHist[byte(ctrl>>(bits.TrailingZeros64(m)&^7))>>4]++
			}
			d.slots[slotFull] += int64(nFull)
			d.slots[slotEmpty] += int64(nEmpty)
			d.slots[slotDeleted] += int64(nDel)
			st.Tombstones += int64(nDel)
			st.EntriesFound += int64(nFull)
			st.OccupancyHist[nFull]++
			st.Slots += bucketCnt
			return nFull, nDel
		}
	}
	for i := 0; i < bucketCnt; i++ {
		c := byte(ctrl >> (8 * i))
		switch {
		case c == ctrlEmpty:
			d.slots[slotEmpty]++
		case c == ctrlDeleted:
			d.slots[slotDeleted]++
			st.Tombstones++
			deleted++
		case c&0x80 == 0:
			d.slots[slotFull]++
			st.HashHist[c>>4]++
			full++
			st.EntriesFound++
			if d.req.Keys && d.typ != nil && d.typ.known {
				t := d.typ
				d.addEntry(g, t.keysOff+uint64(i)*t.keyStride, t.elemsOff+uint64(i)*t.elemStride, groupWhere(table, gi, i), false)
			}
		default:
			d.slots[slotIllegal]++
			d.anomaly(CodeIllegalCtrl, SevError, groupWhere(table, gi, i), "control byte %#x is neither empty, deleted nor full", c)
		}
	}
	st.OccupancyHist[full]++
	st.Slots += bucketCnt
	return full, deleted
}

// Byte-wise word constants.
const (
	loBits uint64 = 0x0101010101010101
	hiBits uint64 = 0x8080808080808080
)

// zeroBytes has the high bit set in every byte of x that is zero, and
// only there (exact per byte, unlike the carry-based test).
func zeroBytes(x uint64) uint64 {
	y := (x & ^hiBits) + ^hiBits // high bit set where the low 7 bits are not all zero
	return ^(y | x | ^hiBits)
}

// tableFields are the offsets of a Swiss table's fields.
type tableFields struct{ size, used, capa, gl, ld, idx, data, mask uint64 }

// tableOffsets resolves the table offsets the walk needs.
func tableOffsets(s goruntime.SwissOffsets) (tableFields, error) {
	var need tableFields
	for _, f := range []struct {
		dst  *uint64
		name string
		v    interface{ Get(string) (uint64, error) }
	}{
		{&need.size, "table size", s.TableSize}, {&need.used, "table.used", s.TableUsed},
		{&need.capa, "table.capacity", s.TableCapacity}, {&need.gl, "table.growthLeft", s.TableGrowthLeft},
		{&need.ld, "table.localDepth", s.TableLocalDepth}, {&need.idx, "table.index", s.TableIndex},
		{&need.data, "table.groups.data", s.TableGroupsData}, {&need.mask, "table.groups.lengthMask", s.TableGroupsLengthMask},
	} {
		var err error
		if *f.dst, err = f.v.Get(f.name); err != nil {
			return need, err
		}
	}
	if need.size < 32 || need.size > 256 {
		return need, fmt.Errorf("table size %d", need.size)
	}
	return need, nil
}

// swissTable is one distinct table of the directory.
type swissTable struct {
	Table
	mask uint64
}

// swissDirectory walks the directory, each distinct table once, and the
// groups of every table.
func (d *decoder) swissDirectory(h *SwissHeader) {
	tables, ok := d.swissTables(h)
	if !ok {
		return
	}
	d.swissGeometry(h, tables)
	var total uint64
	for _, t := range tables {
		if !t.NotWalked {
			total += t.Groups
		}
	}
	d.occ.init(int(min(total, uint64(d.lim.MaxBuckets))))
	first := make([]int, len(tables)) // each table's first unit
	unit := 0
	for i, t := range tables {
		if d.typ == nil {
			t.NotWalked = true
		}
		first[i] = unit
		if !t.NotWalked {
			unit += int(t.Groups)
		}
	}
	d.walkTables(tables, first, total)
	for _, t := range tables {
		d.res.Tables = append(d.res.Tables, t.Table)
	}
	if d.typ == nil {
		var sum int64
		for _, t := range tables {
			sum += int64(t.Used)
		}
		d.res.Note = joinNote(d.res.Note, fmt.Sprintf("type unknown and group size not inferable: groups not walked; tables' own used counts sum to %d", sum))
	}
}

// swissTables reads the directory and every distinct table's header, and
// checks them; ok is false when the directory itself is unusable.
func (d *decoder) swissTables(h *SwissHeader) (tables []*swissTable, ok bool) {
	dir, ok := d.directory(h)
	if !ok {
		return nil, false
	}
	need, err := tableOffsets(d.req.Layout.Swiss)
	if err != nil {
		d.anomaly(CodeUnreadable, SevError, "dir", "layout: %v", err)
		return nil, false
	}
	tables = d.distinctTables(h, dir, need)
	d.checkDirSlots(h, tables)
	d.res.Stats.Tables = len(tables)
	return tables, true
}

// directory checks the directory's shape in the header (dirLen ==
// 1<<globalDepth, globalShift == 64-globalDepth) and reads its dirLen
// table pointers, within MaxTables and the byte limit; ok is false when
// it is too large or unreadable.
func (d *decoder) directory(h *SwissHeader) (dir []byte, ok bool) {
	if h.DirLen > int64(d.lim.MaxTables) {
		d.truncate("dir", fmt.Errorf("dirLen %d above %d tables: %w", h.DirLen, d.lim.MaxTables, errLimit))
		return nil, false
	}
	n := int(h.DirLen)
	if h.GlobalDepth >= 64 || int64(1)<<h.GlobalDepth != h.DirLen {
		d.anomaly(CodeDirectory, SevError, "dir", "dirLen %d is not 1<<globalDepth (%d)", h.DirLen, h.GlobalDepth)
	}
	if h.GlobalDepth > 0 && h.GlobalDepth < 64 && int(h.GlobalShift) != 64-int(h.GlobalDepth) {
		d.anomaly(CodeDirectory, SevError, "dir", "globalShift %d, want 64-globalDepth = %d", h.GlobalShift, 64-int(h.GlobalDepth))
	}
	if uint64(8*n) > d.r.room() {
		d.truncate("dir", fmt.Errorf("directory of %d tables: byte limit: %w", n, errLimit))
		return nil, false
	}
	dir = make([]byte, 8*n)
	if err := d.r.read(dir, h.DirPtr); err != nil {
		d.readFailed(CodeUnreadable, "dir", fmt.Errorf("directory at %#x: %w", h.DirPtr, err))
		return nil, false
	}
	return dir, true
}

// distinctTables reads each table the directory points to once, in
// directory order. A table fills consecutive slots, so one that comes back
// after another table, and a nil slot, are anomalies; each further slot of
// a table counts in its DirSlots.
func (d *decoder) distinctTables(h *SwissHeader, dir []byte, need tableFields) (tables []*swissTable) {
	n := len(dir) / 8
	seen := make(map[uint64]int, min(n, 4096))
	tb := make([]byte, need.size)
	var prev uint64
	for j := 0; j < n; j++ {
		p := le64(dir, uint64(j)*8)
		if p == 0 {
			d.anomaly(CodeDirectory, SevError, fmt.Sprintf("dir%d", j), "nil table pointer")
			prev = 0
			continue
		}
		if ti, ok := seen[p]; ok {
			if prev != p {
				d.anomaly(CodeDirectory, SevError, fmt.Sprintf("dir%d", j), "table %#x (first at slot %d) reappears after other tables", p, tables[ti].DirIndex)
			}
			tables[ti].DirSlots++
			prev = p
			continue
		}
		prev = p
		seen[p] = len(tables)
		t := &swissTable{Table: Table{Addr: p, DirIndex: j, DirSlots: 1}}
		tables = append(tables, t)
		if !d.readTable(t, tb, need) {
			if d.stop {
				break
			}
			continue
		}
		d.checkTable(t, h)
	}
	return tables
}

// readTable reads the header of table t (at t.Addr, into tb) and decodes
// its fields; false when it is unreadable, which is reported, and the
// table is then not walked.
func (d *decoder) readTable(t *swissTable, tb []byte, need tableFields) bool {
	if err := d.r.read(tb, t.Addr); err != nil {
		t.ReadFailure = err.Error()
		t.NotWalked = true
		d.readFailed(CodeUnreadable, fmt.Sprintf("t%d", t.DirIndex), fmt.Errorf("table at %#x: %w", t.Addr, err))
		return false
	}
	t.Used, t.Capacity, t.GrowthLeft = le16(tb, need.used), le16(tb, need.capa), le16(tb, need.gl)
	t.LocalDepth, t.Index = u8(tb, need.ld), int64(le64(tb, need.idx))
	t.GroupsAddr, t.mask = le64(tb, need.data), le64(tb, need.mask)
	t.Groups = t.mask + 1
	return true
}

// checkTable checks a table's header against its directory slot and
// against itself. A group count that is not a power of two leaves the
// table unwalked: its groups could not be told from the memory after
// them.
func (d *decoder) checkTable(t *swissTable, h *SwissHeader) {
	where := fmt.Sprintf("t%d", t.DirIndex)
	if t.Index != int64(t.DirIndex) {
		d.anomaly(CodeDirectory, SevError, where, "table index %d, first directory slot %d", t.Index, t.DirIndex)
	}
	if t.LocalDepth > h.GlobalDepth {
		d.anomaly(CodeDirectory, SevError, where, "localDepth %d > globalDepth %d", t.LocalDepth, h.GlobalDepth)
	}
	switch {
	case t.Groups == 0 || t.mask&t.Groups != 0:
		d.anomaly(CodeTableInconsistent, SevError, where, "group count %d is not a power of two", t.Groups)
		t.NotWalked = true
	case uint64(t.Capacity) != t.Groups*bucketCnt:
		d.anomaly(CodeTableInconsistent, SevError, where, "capacity %d, but %d groups", t.Capacity, t.Groups)
	}
	if t.Capacity > maxTableCapacity {
		d.anomaly(CodeTableInconsistent, SevWarning, where, "capacity %d above the runtime's %d", t.Capacity, maxTableCapacity)
	}
	if t.Used > t.Capacity {
		d.anomaly(CodeTableInconsistent, SevError, where, "used %d > capacity %d", t.Used, t.Capacity)
	}
}

// checkDirSlots checks that each table read fills the 2^(globalDepth -
// localDepth) directory slots its local depth gives it.
func (d *decoder) checkDirSlots(h *SwissHeader, tables []*swissTable) {
	for _, t := range tables {
		if t.ReadFailure != "" || t.LocalDepth > h.GlobalDepth || h.GlobalDepth >= 64 {
			continue
		}
		if want := 1 << (h.GlobalDepth - t.LocalDepth); t.DirSlots != want {
			d.anomaly(CodeDirectory, SevError, fmt.Sprintf("t%d", t.DirIndex), "table fills %d directory slots, localDepth %d needs %d", t.DirSlots, t.LocalDepth, want)
		}
	}
}

// swissGeometry infers the group size when the type is unknown.
func (d *decoder) swissGeometry(h *SwissHeader, tables []*swissTable) {
	if d.typ != nil {
		return
	}
	d.inferSwiss(tables)
	h.GroupSize = 0
	if d.typ != nil {
		h.GroupSize = d.typ.groupSize
	}
}

// walkTables walks the groups of every walkable table; first[i] is table
// i's first unit in the occupancy matrix, total the groups of them all.
// Large maps are walked by several goroutines, in contiguous runs of
// tables, when no limit can stop the walk part way.
func (d *decoder) walkTables(tables []*swissTable, first []int, total uint64) {
	if d.typ == nil {
		return
	}
	walkable := func(t *swissTable) bool { return !t.NotWalked }
	k := d.workers(total)
	if k <= 1 || d.units+int(total) > d.lim.MaxBuckets || total*d.typ.groupSize > d.r.room() {
		for i, t := range tables {
			if walkable(t) && !d.stop {
				d.walkTable(t, first[i])
			}
		}
		return
	}
	weights := make([]uint64, len(tables))
	for i, t := range tables {
		if walkable(t) {
			weights[i] = t.Groups
		}
	}
	bounds := split(weights, k)
	forks := make([]*decoder, k)
	for i := range forks {
		forks[i] = d.fork()
	}
	run(forks, func(p int, f *decoder) {
		for i := bounds[p]; i < bounds[p+1]; i++ {
			if walkable(tables[i]) && !f.stop {
				f.walkTable(tables[i], first[i])
			}
		}
	})
	for _, f := range forks {
		d.join(f)
	}
}

// walkTable reads a table's groups in bulk and classifies every slot.
func (d *decoder) walkTable(t *swissTable, unit int) {
	gs := d.typ.groupSize
	where := fmt.Sprintf("t%d", t.DirIndex)
	per := max(d.lim.chunk()/gs, 1)
	per = min(per, max(d.r.room()/gs, 1), uint64(max(d.lim.MaxBuckets-d.units, 1)))
	var buf []byte
	deleted := 0
	for first := uint64(0); first < t.Groups; first += per {
		cnt := min(per, t.Groups-first)
		if err := d.takeUnits(int(cnt)); err != nil {
			d.truncate(where, err)
			return
		}
		chunk, err := d.r.readView(&buf, cnt*gs, t.GroupsAddr+first*gs)
		if err != nil {
			t.ReadFailure = err.Error()
			d.readFailed(CodeUnreadable, fmt.Sprintf("%s.g%d", where, first), fmt.Errorf("groups at %#x: %w", t.GroupsAddr+first*gs, err))
			return
		}
		for i := uint64(0); i < cnt; i++ {
			full, del := d.group(chunk[i*gs:(i+1)*gs], t.DirIndex, first+i)
			t.Found += full
			deleted += del
			d.occ.add(unit+int(first+i), full)
		}
		d.res.Stats.Groups += cnt
	}
	t.Tombstones = deleted
	if t.Found != int(t.Used) {
		d.anomaly(CodeTableInconsistent, SevError, where, "used %d, found %d full slots", t.Used, t.Found)
	}
	if t.Capacity > 0 {
		maxGrowth := int(t.Capacity) * maxAvgGroupLoad / bucketCnt
		if t.Capacity <= bucketCnt {
			maxGrowth = int(t.Capacity) - 1
		}
		if int(t.GrowthLeft)+int(t.Used)+deleted != maxGrowth {
			d.anomaly(CodeTableInconsistent, SevWarning, where, "growthLeft %d + used %d + tombstones %d != %d for capacity %d",
				t.GrowthLeft, t.Used, deleted, maxGrowth, t.Capacity)
		}
	}
}

func groupWhere(table int, gi uint64, slot int) string {
	if table < 0 {
		return fmt.Sprintf("small.s%d", slot)
	}
	return fmt.Sprintf("t%d.g%d.s%d", table, gi, slot)
}
