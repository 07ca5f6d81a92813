package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/hmapdecode"
)

// Finding a map's type when the caller gave only its address. The map
// header does not point at its type; the runtime passes the type to every
// map function instead. What the binary does hold is every map type
// descriptor, in moduledata's types..etypes (kept by stripped binaries:
// reflection needs them). A map type is 8-byte aligned, of kind Map (21,
// every Go since 1.0), with Size_ and PtrBytes of one pointer and key, elem
// and bucket/group pointers back into the same range. The decoder can infer
// the slot geometry (bucket or group size) from the map's own memory; the
// descriptors whose size equals it are the map's possible types. One: it
// is the type, and the map is decoded with it. Several: they are listed,
// and --type-addr picks one.

// TypeCandidate is a map type descriptor whose geometry fits a map.
type TypeCandidate = apitype.TypeCandidate

// Bounds of the descriptor scan: a types range larger than this is not
// read (real binaries have a few MiB), and the list is cut.
const (
	maxTypesBytes   = 64 << 20
	maxCandidates   = 4096
	maxListedByName = 8
	kindMap         = 21
	kindMask        = 0x1f
	tflagExtraStar  = 1 << 1
)

// mapTypes lists every map type descriptor in [types, etypes) of the
// image in buf (read from address types), with its unit size.
func mapTypes(buf []byte, types uint64, l *goruntime.Layout) ([]TypeCandidate, error) {
	t := l.Type
	var key, elem, grp, unitOff goruntime.Offset
	unitBytes := 8
	switch l.Maps {
	case goruntime.MapClassic:
		key, elem, grp, unitOff, unitBytes = l.Classic.TypeKey, l.Classic.TypeElem, l.Classic.TypeBucket, l.Classic.TypeBucketSize, 2
	case goruntime.MapSwiss:
		key, elem, grp, unitOff = l.Swiss.TypeKey, l.Swiss.TypeElem, l.Swiss.TypeGroup, l.Swiss.TypeGroupSize
	default:
		return nil, fmt.Errorf("map layout %q: %w", l.Maps, goruntime.ErrUnsupported)
	}
	for _, o := range []goruntime.Offset{t.Size, t.PtrBytes, t.Kind, key, elem, grp, unitOff} {
		if !o.Known() {
			return nil, fmt.Errorf("map type offsets for %s: %w", l.Version, goruntime.ErrUnsupported)
		}
	}
	end := uint64(max(key, elem, grp, unitOff+goruntime.Offset(unitBytes)))
	le := binary.LittleEndian
	inRange := func(p uint64) bool { return p >= types && p < types+uint64(len(buf)) }
	var out []TypeCandidate
	for off := uint64(0); off+end <= uint64(len(buf)); off += 8 {
		d := buf[off:]
		if d[t.Kind]&kindMask != kindMap || le.Uint64(d[t.Size:]) != 8 || le.Uint64(d[t.PtrBytes:]) != 8 {
			continue
		}
		if !inRange(le.Uint64(d[key:])) || !inRange(le.Uint64(d[elem:])) || !inRange(le.Uint64(d[grp:])) {
			continue
		}
		var unit uint64
		if unitBytes == 2 {
			unit = uint64(le.Uint16(d[unitOff:]))
		} else {
			unit = le.Uint64(d[unitOff:])
		}
		if unit == 0 {
			continue
		}
		out = append(out, TypeCandidate{Addr: types + off, Unit: unit})
		if len(out) >= maxCandidates {
			break
		}
	}
	return out, nil
}

// unitOf is the slot geometry the decoder found: the bucket or group size,
// 0 when it found none.
func unitOf(r *hmapdecode.Result) uint64 {
	switch {
	case r == nil:
		return 0
	case r.Classic != nil:
		return r.Classic.BucketSize
	case r.Swiss != nil:
		return r.Swiss.GroupSize
	}
	return 0
}

// matching returns the candidates with unit size unit.
func matching(cands []TypeCandidate, unit uint64) []TypeCandidate {
	var out []TypeCandidate
	for _, c := range cands {
		if c.Unit == unit {
			out = append(out, c)
		}
	}
	return out
}

// typeName reads a type's name as the runtime stores it: abi.Type.Str is
// an offset from moduledata.types to an abi.Name (a flags byte, a uvarint
// length, the bytes; Go 1.17+).
func typeName(mem memory, l *goruntime.Layout, typesBase, typ uint64) (string, error) {
	if typesBase == 0 || !l.Type.Str.Known() || !l.Type.TFlag.Known() {
		return "", errors.New("types base or type offsets unknown")
	}
	var hdr [64]byte
	if _, err := mem.ReadAt(hdr[:], typ); err != nil {
		return "", fmt.Errorf("read type at %#x: %w", typ, err)
	}
	str := int32(binary.LittleEndian.Uint32(hdr[l.Type.Str:]))
	if str < 0 {
		return "", fmt.Errorf("type at %#x: negative name offset", typ)
	}
	var nh [11]byte
	addr := typesBase + uint64(str)
	if _, err := mem.ReadAt(nh[:], addr); err != nil {
		return "", fmt.Errorf("read type name at %#x: %w", addr, err)
	}
	n, k := binary.Uvarint(nh[1:])
	if k <= 0 || n == 0 || n > 1024 {
		return "", fmt.Errorf("type name at %#x: bad length", addr)
	}
	name := make([]byte, n)
	if _, err := mem.ReadAt(name, addr+1+uint64(k)); err != nil {
		return "", fmt.Errorf("read type name at %#x: %w", addr, err)
	}
	s := string(name)
	if hdr[l.Type.TFlag]&tflagExtraStar != 0 {
		s = strings.TrimPrefix(s, "*")
	}
	return s, nil
}

// memory reads the target (procmem.Reader satisfies it).
type memory interface {
	ReadAt(p []byte, addr uint64) (int, error)
}
