package goruntime

import (
	"debug/dwarf"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// HeapOffsets locate a heap object's span and the memory profiler's record
// of where the object was allocated. When an allocation is sampled (every
// one with GODEBUG=memprofilerate=1), the runtime hangs a specialprofile
// on the object's span (mspan.specials, sorted by offset) whose bucket
// holds the allocating stack as return PCs after its header (mprof.go,
// Go 1.19 to 1.27). Taken from DWARF only: the struct layouts (special's
// offset is a uint16 up to Go 1.2x, a uintptr in 1.26), the constants
// (_KindSpecialProfile is 2 in Go 1.19, 4 in 1.26 and 1.27) and the
// arena geometry are the binary's own, never a table's guess.
type HeapOffsets struct {
	// MHeap is the link address of runtime.mheap_.
	MHeap uint64
	// MemProfileRate is the link address of runtime.MemProfileRate (0:
	// not in DWARF). The runtime zeroes it at start when the linker found
	// no user of the memory profile (no runtime/pprof, no
	// runtime.MemProfile): then nothing is ever sampled, whatever
	// GODEBUG=memprofilerate says.
	MemProfileRate uint64
	// Arenas is mheap.arenas, [L1]*[L2]*heapArena; L1Shift is
	// runtime.arenaL1Shift (index l1 = i >> L1Shift, l2 = i & (L2-1);
	// L1 is 1 on linux/amd64 and arm64, where arenaL1Bits is 0).
	Arenas         Offset
	L1, L2         uint64
	L1Shift        uint64
	ArenaBase      uint64 // runtime.arenaBaseOffsetUintptr
	HeapArenaBytes uint64
	PageSize       uint64
	// Spans is heapArena.spans, PagesPerArena entries.
	Spans         Offset
	PagesPerArena uint64
	// runtime.mspan fields; SpanState is the byte of mspan.state.
	SpanSize                                          uint64
	SpanStartAddr, SpanElemSize, SpanLimit, SpanState Offset
	SpanSpecials                                      Offset
	SpanInUse                                         uint64 // runtime.mSpanInUse
	// runtime.special: next, offset (SpecialOffsetSize bytes), kind.
	SpecialNext, SpecialOffset, SpecialKind Offset
	SpecialOffsetSize                       uint64
	KindProfile                             uint64 // runtime._KindSpecialProfile
	// ProfileBucket is specialprofile.b; ProfileSize its size.
	ProfileBucket Offset
	ProfileSize   uint64
	// BucketNStk is bucket.nstk; the stack's PCs start at BucketSize.
	BucketNStk Offset
	BucketSize uint64
}

// heapTypes are the runtime struct types HeapOffsets reads.
var heapTypes = []string{"runtime.mheap", "runtime.heapArena", "runtime.mspan", "runtime.special", "runtime.specialprofile", "runtime.bucket"}

// heapConsts are the runtime constants it reads (Go emits them as
// DW_TAG_constant; arenaBaseOffsetUintptr exists "for viewcore" since
// Go 1.15).
var heapConsts = []string{"runtime.arenaL1Shift", "runtime.arenaBaseOffsetUintptr", "runtime.heapArenaBytes",
	"runtime.pageSize", "runtime.mSpanInUse", "runtime._KindSpecialProfile"}

// ApplyHeapDWARF sets l.Heap from the binary's DWARF in one walk, or
// leaves it nil and says in l.HeapNote what was missing: the allocation
// site is then "not looked at", never read with guessed offsets.
func (l *Layout) ApplyHeapDWARF(d *dwarf.Data) error {
	h, err := heapFromDWARF(d)
	if err != nil {
		l.Heap, l.HeapNote = nil, err.Error()
		return err
	}
	l.Heap, l.HeapNote = h, ""
	return nil
}

func heapFromDWARF(d *dwarf.Data) (*HeapOffsets, error) {
	w, err := walkHeapDWARF(d)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, c := range heapConsts {
		if _, ok := w.consts[c]; !ok {
			missing = append(missing, c)
		}
	}
	if w.mheap == 0 {
		missing = append(missing, "runtime.mheap_")
	}
	h, more := w.offsets()
	missing = append(missing, more...)
	// The geometry must agree with itself: an arena is PagesPerArena
	// pages; a page is 8 KiB on every Go port.
	if len(missing) == 0 && (h.PageSize != 8192 || h.PagesPerArena*h.PageSize != h.HeapArenaBytes) {
		missing = append(missing, fmt.Sprintf("arena geometry: %d pages of %d bytes, heapArenaBytes %d", h.PagesPerArena, h.PageSize, h.HeapArenaBytes))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("runtime heap layout from DWARF: missing %s: %w", strings.Join(missing, ", "), ErrUnsupported)
	}
	return h, nil
}

// heapDWARF is what one walk of a binary's DWARF found for HeapOffsets.
type heapDWARF struct {
	types       map[string]*dwarf.StructType
	consts      map[string]int64
	mheap, rate uint64 // link addresses of runtime.mheap_, runtime.MemProfileRate
}

// walkHeapDWARF walks the top-level entries once (bounded), keeping the
// heap's struct types, constants and the two variables' addresses.
func walkHeapDWARF(d *dwarf.Data) (*heapDWARF, error) {
	w := &heapDWARF{types: map[string]*dwarf.StructType{}, consts: map[string]int64{}}
	r := d.Reader()
	for n := 0; n < maxDWARFEntries; n++ {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("read DWARF for the heap layout: %w", err)
		}
		if e == nil {
			break
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		switch e.Tag {
		case dwarf.TagCompileUnit:
			continue
		case dwarf.TagConstant:
			if v, ok := e.Val(dwarf.AttrConstValue).(int64); ok && slices.Contains(heapConsts, name) {
				w.consts[name] = v
			}
		case dwarf.TagVariable:
			if loc, ok := e.Val(dwarf.AttrLocation).([]byte); ok && len(loc) == 9 && loc[0] == 0x03 { // DW_OP_addr
				switch name {
				case "runtime.mheap_":
					w.mheap = binary.LittleEndian.Uint64(loc[1:])
				case "runtime.MemProfileRate":
					w.rate = binary.LittleEndian.Uint64(loc[1:])
				}
			}
		case dwarf.TagStructType:
			if slices.Contains(heapTypes, name) && w.types[name] == nil {
				if t, err := d.Type(e.Offset); err == nil {
					if st, ok := t.(*dwarf.StructType); ok {
						w.types[name] = st
					}
				}
			}
		}
		if e.Children {
			r.SkipChildren()
		}
	}
	return w, nil
}

// field finds a struct field, or names what is missing.
func (w *heapDWARF) field(typ, f string, missing *[]string) (*dwarf.StructField, bool) {
	st := w.types[typ]
	if st == nil {
		*missing = append(*missing, typ)
		return nil, false
	}
	for _, x := range st.Field {
		if x.Name == f {
			return x, true
		}
	}
	*missing = append(*missing, typ+"."+f)
	return nil, false
}

// offsets builds HeapOffsets from the walk; missing names what was not
// found.
func (w *heapDWARF) offsets() (h *HeapOffsets, missing []string) {
	off := func(typ, f string) Offset {
		if x, ok := w.field(typ, f, &missing); ok {
			return Offset(x.ByteOffset)
		}
		return Unknown
	}
	h = &HeapOffsets{
		MHeap:          w.mheap,
		MemProfileRate: w.rate,
		L1Shift:        uint64(w.consts["runtime.arenaL1Shift"]),
		ArenaBase:      uint64(w.consts["runtime.arenaBaseOffsetUintptr"]),
		HeapArenaBytes: uint64(w.consts["runtime.heapArenaBytes"]),
		PageSize:       uint64(w.consts["runtime.pageSize"]),
		SpanInUse:      uint64(w.consts["runtime.mSpanInUse"]),
		KindProfile:    uint64(w.consts["runtime._KindSpecialProfile"]),
		Arenas:         off("runtime.mheap", "arenas"),
		Spans:          off("runtime.heapArena", "spans"),
		SpanStartAddr:  off("runtime.mspan", "startAddr"),
		SpanElemSize:   off("runtime.mspan", "elemsize"),
		SpanLimit:      off("runtime.mspan", "limit"),
		SpanState:      off("runtime.mspan", "state"),
		SpanSpecials:   off("runtime.mspan", "specials"),
		SpecialNext:    off("runtime.special", "next"),
		SpecialKind:    off("runtime.special", "kind"),
		ProfileBucket:  off("runtime.specialprofile", "b"),
		BucketNStk:     off("runtime.bucket", "nstk"),
	}
	missing = append(missing, w.sizes(h)...)
	return h, missing
}

// sizes sets the array lengths (arenas [L1]*[L2]*heapArena, spans
// [pagesPerArena]*mspan), special.offset's width and the struct sizes.
func (w *heapDWARF) sizes(h *HeapOffsets) (missing []string) {
	if x, ok := w.field("runtime.mheap", "arenas", &missing); ok {
		if l1, elem, ok := arrayOf(x.Type); ok {
			if p, ok := elem.(*dwarf.PtrType); ok {
				if l2, _, ok := arrayOf(p.Type); ok {
					h.L1, h.L2 = l1, l2
				}
			}
		}
		if h.L1 == 0 || h.L2 == 0 {
			missing = append(missing, "runtime.mheap.arenas: not [L1]*[L2]*heapArena")
		}
	}
	if x, ok := w.field("runtime.heapArena", "spans", &missing); ok {
		if n, _, ok := arrayOf(x.Type); ok {
			h.PagesPerArena = n
		} else {
			missing = append(missing, "runtime.heapArena.spans: not an array")
		}
	}
	if x, ok := w.field("runtime.special", "offset", &missing); ok {
		h.SpecialOffset, h.SpecialOffsetSize = Offset(x.ByteOffset), uint64(x.Type.Size())
		if s := h.SpecialOffsetSize; s != 2 && s != 4 && s != 8 {
			missing = append(missing, fmt.Sprintf("runtime.special.offset: %d bytes", s))
		}
	}
	for typ, dst := range map[string]*uint64{"runtime.mspan": &h.SpanSize, "runtime.specialprofile": &h.ProfileSize, "runtime.bucket": &h.BucketSize} {
		if st := w.types[typ]; st != nil && st.ByteSize > 0 {
			*dst = uint64(st.ByteSize)
		}
	}
	return missing
}

// arrayOf returns an array type's length and element type (through
// typedefs).
func arrayOf(t dwarf.Type) (uint64, dwarf.Type, bool) {
	for i := 0; i < 8; i++ {
		switch x := t.(type) {
		case *dwarf.TypedefType:
			t = x.Type
		case *dwarf.ArrayType:
			if x.Count <= 0 {
				return 0, nil, false
			}
			return uint64(x.Count), x.Type, true
		default:
			return 0, nil, false
		}
	}
	return 0, nil, false
}

// errHeapUnknown is returned by users of a layout without HeapOffsets.
var errHeapUnknown = errors.New("runtime heap layout unknown (no DWARF)")

// HeapLayout returns l's heap offsets, or an error saying why there are
// none.
func (l *Layout) HeapLayout() (*HeapOffsets, error) {
	if l == nil || l.Heap == nil {
		if l != nil && l.HeapNote != "" {
			return nil, errors.New(l.HeapNote)
		}
		return nil, errHeapUnknown
	}
	return l.Heap, nil
}
