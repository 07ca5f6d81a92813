package hmapdecode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/mapsentry/mapsentry/goruntime"
)

// mapType is the slot geometry of one map, from its type descriptor or
// inferred. Offsets are relative to a classic bucket or a Swiss group.
type mapType struct {
	keyAddr, elemAddr         uint64
	keySize, elemSize         uint64 // sizes of the key and elem types themselves
	keyKind, elemKind         uint8
	indirectKey, indirectElem bool
	keySlot, elemSlot         uint64 // bytes a slot stores (8 when indirect)

	// classic
	bucketSize uint64
	// Swiss: key(i) = keysOff + i*keyStride, elem(i) = elemsOff + i*elemStride
	groupSize, keysOff, keyStride, elemsOff, elemStride uint64

	known bool // key/elem geometry known (not just the unit size)
}

// Kinds (abi.Kind, unchanged 1.19–1.27; low 5 bits of Kind_).
const (
	kindMask   = 0x1f
	kindMap    = 21
	kindString = 24
)

// Bounds for sanity checks of descriptors and names.
const (
	maxSlotBytes  = 128 // larger keys/elems are stored indirectly
	maxUnitBytes  = 8 + 8*2*maxSlotBytes + 8
	maxNameBytes  = 1024
	tflagExtraStr = 1 << 1 // abi.TFlagExtraStar: Str has a leading '*'
)

// typeHeader is the part of abi.Type (runtime._type) we use.
type typeHeader struct {
	size  uint64
	tflag uint8
	kind  uint8
	str   int32
}

func (d *decoder) readTypeHeader(addr uint64) (typeHeader, error) {
	t := d.req.Layout.Type
	n := uint64(48)
	if t.HeaderSize.Known() {
		n = uint64(t.HeaderSize)
	}
	var buf [64]byte
	if n > uint64(len(buf)) {
		n = uint64(len(buf))
	}
	if err := d.r.read(buf[:n], addr); err != nil {
		return typeHeader{}, fmt.Errorf("read type header at %#x: %w", addr, err)
	}
	b := buf[:n]
	var h typeHeader
	if t.Size.Known() {
		h.size = le64(b, uint64(t.Size))
	}
	if t.TFlag.Known() {
		h.tflag = u8(b, uint64(t.TFlag))
	}
	if t.Kind.Known() {
		h.kind = u8(b, uint64(t.Kind)) & kindMask
	}
	if t.Str.Known() {
		h.str = int32(le32(b, uint64(t.Str)))
	}
	return h, nil
}

// typeName resolves a type's name through moduledata.types (TypesBase).
func (d *decoder) typeName(h typeHeader) (string, error) {
	if d.req.TypesBase == 0 {
		return "", errors.New("types base unknown")
	}
	if h.str < 0 {
		return "", fmt.Errorf("negative name offset %d", h.str)
	}
	addr := d.req.TypesBase + uint64(h.str)
	// abi.Name: one flags byte, a uvarint length, the bytes (Go 1.17+).
	var hdr [11]byte
	if err := d.r.read(hdr[:], addr); err != nil {
		return "", fmt.Errorf("read type name at %#x: %w", addr, err)
	}
	l, n := binary.Uvarint(hdr[1:])
	if n <= 0 || l == 0 || l > maxNameBytes {
		return "", fmt.Errorf("type name at %#x: bad length", addr)
	}
	buf := make([]byte, l)
	if err := d.r.read(buf, addr+1+uint64(n)); err != nil {
		return "", fmt.Errorf("read type name at %#x: %w", addr, err)
	}
	s := string(buf)
	if h.tflag&tflagExtraStr != 0 {
		s = strings.TrimPrefix(s, "*")
	}
	return s, nil
}

// loadType reads the map type descriptor at TypeAddr and validates it. On
// failure it reports type_invalid and returns nil: the caller infers.
func (d *decoder) loadType() *mapType {
	if d.req.TypeAddr == 0 {
		return nil
	}
	t, err := d.readMapType(d.req.TypeAddr)
	if err != nil {
		if errors.Is(err, errLimit) {
			d.truncate("type", err)
		} else {
			d.anomaly(CodeTypeInvalid, SevWarning, "type", "map type at %#x: %v", d.req.TypeAddr, err)
		}
		return nil
	}
	return t
}

// readMapType reads and checks the map type descriptor at addr: its slot
// geometry for the map kind of the layout, the key and elem types it
// points to, and (when it can) their names. Every size and offset it
// returns was checked against the unit it describes, so a hostile
// descriptor cannot make the walk index outside a bucket or group.
func (d *decoder) readMapType(addr uint64) (*mapType, error) {
	l := d.req.Layout
	buf, err := d.mapTypeBytes(addr)
	if err != nil {
		return nil, err
	}
	th, err := d.readTypeHeader(addr)
	if err != nil {
		return nil, err
	}
	if th.kind != kindMap {
		return nil, fmt.Errorf("kind %d is not map (%d)", th.kind, kindMap)
	}
	var t *mapType
	if l.Maps == goruntime.MapClassic {
		t, err = classicTypeSlots(l.Classic, buf)
	} else {
		t, err = swissTypeSlots(l.Swiss, buf)
	}
	if err != nil {
		return nil, err
	}
	kh, eh, err := d.keyElemTypes(t)
	if err != nil {
		return nil, err
	}
	if l.Maps == goruntime.MapSwiss {
		err = swissSlotSizes(t)
	} else {
		err = classicSlotSizes(t)
	}
	if err != nil {
		return nil, err
	}
	d.nameMapType(th, kh, eh)
	return t, nil
}

// mapTypeBytes reads the whole map type descriptor at addr, whose size
// the layout gives (classic: up to its flags; Swiss: the table's size).
// A size outside 48–512 bytes is a layout this decoder does not know.
func (d *decoder) mapTypeBytes(addr uint64) ([]byte, error) {
	l := d.req.Layout
	var size uint64
	if l.Maps == goruntime.MapClassic {
		size = uint64(l.Classic.TypeFlag) + 4
	} else {
		if !l.Swiss.TypeSize.Known() {
			return nil, fmt.Errorf("swiss map type size: %w", goruntime.ErrUnsupported)
		}
		size = uint64(l.Swiss.TypeSize)
	}
	if size < 48 || size > 512 {
		return nil, fmt.Errorf("map type size %d: %w", size, goruntime.ErrUnsupported)
	}
	buf := make([]byte, size)
	if err := d.r.read(buf, addr); err != nil {
		return nil, fmt.Errorf("read map type: %w", err)
	}
	return buf, nil
}

// descField is the 8-byte field of a type descriptor at o, 0 when the
// layout does not have it.
func descField(buf []byte, o goruntime.Offset) uint64 {
	if !o.Known() {
		return 0
	}
	return le64(buf, uint64(o))
}

// classicTypeSlots decodes a classic map type descriptor (runtime.maptype
// 1.19–1.20, abi.MapType 1.21–1.23, abi.OldMapType 1.24–1.25): the key
// and elem type pointers, the slot and bucket sizes it states, and the
// indirect flags (bit 0 key, bit 1 elem). The bucket must be exactly what
// tophash, keys, elems and the overflow pointer need, plus padding.
func classicTypeSlots(c goruntime.ClassicOffsets, buf []byte) (*mapType, error) {
	t := &mapType{known: true}
	t.keyAddr, t.elemAddr = descField(buf, c.TypeKey), descField(buf, c.TypeElem)
	t.keySlot = uint64(u8(buf, uint64(c.TypeKeySize)))
	t.elemSlot = uint64(u8(buf, uint64(c.TypeElemSize)))
	t.bucketSize = uint64(le16(buf, uint64(c.TypeBucketSize)))
	flags := le32(buf, uint64(c.TypeFlag))
	t.indirectKey, t.indirectElem = flags&1 != 0, flags&2 != 0
	if t.keySlot > maxSlotBytes || t.elemSlot > maxSlotBytes {
		return nil, fmt.Errorf("slot sizes %d/%d above %d", t.keySlot, t.elemSlot, maxSlotBytes)
	}
	if min := 8 + 8*(t.keySlot+t.elemSlot) + 8; t.bucketSize < min || t.bucketSize > min+64 || t.bucketSize%8 != 0 {
		return nil, fmt.Errorf("bucket size %d does not fit key %d / elem %d slots", t.bucketSize, t.keySlot, t.elemSlot)
	}
	return t, nil
}

// swissTypeSlots decodes a Swiss map type descriptor (abi.SwissMapType
// 1.24–1.25, abi.MapType 1.26–1.27): the key and elem type pointers, the
// group size, where the keys and elems of a group are, and the indirect
// flags (bit 2 key, bit 3 elem). Offsets and strides must lie within the
// group; whether all eight slots fit is checked once the key and elem
// sizes are known (swissSlotSizes).
func swissTypeSlots(s goruntime.SwissOffsets, buf []byte) (*mapType, error) {
	t := &mapType{known: true}
	t.keyAddr, t.elemAddr = descField(buf, s.TypeKey), descField(buf, s.TypeElem)
	t.groupSize = descField(buf, s.TypeGroupSize)
	if s.TypeKeysOff.Known() {
		// 1.27: explicit key/elem arrays (both group layouts).
		t.keysOff, t.keyStride = descField(buf, s.TypeKeysOff), descField(buf, s.TypeKeyStride)
		t.elemsOff, t.elemStride = descField(buf, s.TypeElemsOff), descField(buf, s.TypeElemStride)
	} else {
		// 1.24–1.26: slots of {key, elem} after the control word.
		slot := descField(buf, s.TypeSlotSize)
		t.keysOff, t.keyStride = 8, slot
		t.elemsOff, t.elemStride = 8+descField(buf, s.TypeElemOff), slot
	}
	var flags uint32
	if s.TypeFlags.Known() {
		flags = le32(buf, uint64(s.TypeFlags))
	}
	t.indirectKey, t.indirectElem = flags&4 != 0, flags&8 != 0
	if t.groupSize < 8 || t.groupSize > maxUnitBytes {
		return nil, fmt.Errorf("group size %d out of range", t.groupSize)
	}
	if t.keyStride > t.groupSize || t.elemStride > t.groupSize || t.keysOff > t.groupSize || t.elemsOff > t.groupSize {
		return nil, fmt.Errorf("slot offsets exceed group size %d", t.groupSize)
	}
	return t, nil
}

// keyElemTypes reads the key and elem type headers t points to and takes
// their sizes and kinds into t.
func (d *decoder) keyElemTypes(t *mapType) (kh, eh typeHeader, err error) {
	if kh, err = d.readTypeHeader(t.keyAddr); err != nil {
		return kh, eh, fmt.Errorf("key type: %w", err)
	}
	if eh, err = d.readTypeHeader(t.elemAddr); err != nil {
		return kh, eh, fmt.Errorf("elem type: %w", err)
	}
	t.keySize, t.elemSize, t.keyKind, t.elemKind = kh.size, eh.size, kh.kind, eh.kind
	return kh, eh, nil
}

// swissSlotSizes sets a Swiss type's slot sizes from its key and elem
// sizes (8 for an indirect one: a pointer) and checks that all eight
// slots of a group lie within it.
func swissSlotSizes(t *mapType) error {
	t.keySlot, t.elemSlot = t.keySize, t.elemSize
	if t.indirectKey {
		t.keySlot = 8
	}
	if t.indirectElem {
		t.elemSlot = 8
	}
	if t.keySlot > maxSlotBytes || t.elemSlot > maxSlotBytes {
		return fmt.Errorf("slot sizes %d/%d above %d", t.keySlot, t.elemSlot, maxSlotBytes)
	}
	if t.keysOff+7*t.keyStride+t.keySlot > t.groupSize || t.elemsOff+7*t.elemStride+t.elemSlot > t.groupSize {
		return fmt.Errorf("slots do not fit group size %d", t.groupSize)
	}
	return nil
}

// classicSlotSizes checks that a classic type's direct key and elem
// types are as large as the slots the descriptor states.
func classicSlotSizes(t *mapType) error {
	if !t.indirectKey && t.keySize != t.keySlot || !t.indirectElem && t.elemSize != t.elemSlot {
		return fmt.Errorf("key/elem sizes %d/%d differ from slot sizes %d/%d", t.keySize, t.elemSize, t.keySlot, t.elemSlot)
	}
	return nil
}

// nameMapType names the map, key and elem types in the result. Names are
// a bonus: a failure leaves them empty and says why (for the map type),
// and a map type without a name of its own is named from its key and elem.
func (d *decoder) nameMapType(th, kh, eh typeHeader) {
	if name, err := d.typeName(th); err == nil {
		d.res.GoType = name
	} else {
		d.res.Note = joinNote(d.res.Note, "type name not resolved: "+err.Error())
	}
	if name, err := d.typeName(kh); err == nil {
		d.res.KeyType = name
	}
	if name, err := d.typeName(eh); err == nil {
		d.res.ElemType = name
	}
	if d.res.GoType == "" && d.res.KeyType != "" && d.res.ElemType != "" {
		d.res.GoType = "map[" + d.res.KeyType + "]" + d.res.ElemType
	}
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// keyText reads the text of a string key from its (ptr, len) header.
func (d *decoder) keyText(key []byte) *string {
	if d.typ == nil || d.typ.keyKind != kindString || len(key) < 16 {
		return nil
	}
	p, n := le64(key, 0), le64(key, 8)
	if n == 0 {
		s := ""
		return &s
	}
	suffix := ""
	if n > uint64(d.lim.MaxKeyText) {
		n, suffix = uint64(d.lim.MaxKeyText), "…"
	}
	buf := make([]byte, n)
	if err := d.r.read(buf, p); err != nil {
		return nil
	}
	s := string(buf) + suffix
	return &s
}
