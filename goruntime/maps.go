package goruntime

import (
	"debug/dwarf"
	"fmt"
)

// MapKind names a map implementation.
type MapKind string

const (
	MapClassic MapKind = "classic" // runtime.hmap, buckets with tophash
	MapSwiss   MapKind = "swiss"   // internal/runtime/maps.Map, groups with control bytes
)

// ClassicOffsets describe runtime.hmap and its map type descriptor
// (runtime.maptype 1.19–1.20, abi.MapType 1.21–1.23, abi.OldMapType 1.24–1.25).
type ClassicOffsets struct {
	HeaderSize                                          Offset // 48, or 56 for 1.24/1.25 noswissmap
	Count, Flags, B, NOverflow, Hash0                   Offset
	Buckets, OldBuckets, NEvacuate, ClearSeq, Extra     Offset
	TypeKey, TypeElem, TypeBucket, TypeHasher           Offset
	TypeKeySize, TypeElemSize, TypeBucketSize, TypeFlag Offset
}

// SwissOffsets describe maps.Map, maps.table and the Swiss map type
// (abi.SwissMapType 1.24–1.25, abi.MapType 1.26+; 1.27 added the split-group
// fields KeysOff/KeyStride/ElemsOff/ElemStride).
type SwissOffsets struct {
	HeaderSize                                Offset
	Used, Seed, DirPtr, DirLen                Offset
	GlobalDepth, GlobalShift, Writing         Offset
	TombstonePossible                         Offset // 1.25+
	ClearSeq                                  Offset
	TableSize                                 Offset
	TableUsed, TableCapacity, TableGrowthLeft Offset
	TableLocalDepth, TableIndex               Offset
	TableGroupsData, TableGroupsLengthMask    Offset
	TypeKey, TypeElem, TypeGroup, TypeHasher  Offset
	TypeGroupSize, TypeSlotSize, TypeElemOff  Offset
	TypeKeysOff, TypeKeyStride, TypeElemsOff  Offset // 1.27+
	TypeElemStride                            Offset // 1.27+
	TypeFlags, TypeSize                       Offset
}

// TypeOffsets describe the common abi.Type header (runtime._type), the same
// 48 bytes in every supported version.
type TypeOffsets struct {
	Size, PtrBytes, Hash, TFlag, Kind, Str Offset
	HeaderSize                             Offset
}

func typeTable() TypeOffsets {
	return TypeOffsets{Size: 0, PtrBytes: 8, Hash: 16, TFlag: 20, Kind: 23, Str: 40, HeaderSize: 48}
}

func classicTable(minor int, noswiss bool) ClassicOffsets {
	c := ClassicOffsets{
		HeaderSize: 48, Count: 0, Flags: 8, B: 9, NOverflow: 10, Hash0: 12,
		Buckets: 16, OldBuckets: 24, NEvacuate: 32, ClearSeq: Unknown, Extra: 40,
		TypeKey: 48, TypeElem: 56, TypeBucket: 64, TypeHasher: 72,
		TypeKeySize: 80, TypeElemSize: 81, TypeBucketSize: 82, TypeFlag: 84,
	}
	if noswiss && minor >= 24 {
		// clearSeq was added to hmap in 1.24 (commit 1f8fa4941f).
		c.HeaderSize, c.ClearSeq, c.Extra = 56, 40, 48
	}
	return c
}

func swissTable(minor int) SwissOffsets {
	s := SwissOffsets{
		HeaderSize: 48, Used: 0, Seed: 8, DirPtr: 16, DirLen: 24,
		GlobalDepth: 32, GlobalShift: 33, Writing: 34, TombstonePossible: Unknown, ClearSeq: 40,
		TableSize: 32, TableUsed: 0, TableCapacity: 2, TableGrowthLeft: 4, TableLocalDepth: 6,
		TableIndex: 8, TableGroupsData: 16, TableGroupsLengthMask: 24,
		TypeKey: 48, TypeElem: 56, TypeGroup: 64, TypeHasher: 72, TypeGroupSize: 80,
		TypeSlotSize: Unknown, TypeElemOff: Unknown, TypeKeysOff: Unknown, TypeKeyStride: Unknown,
		TypeElemsOff: Unknown, TypeElemStride: Unknown, TypeFlags: Unknown, TypeSize: Unknown,
	}
	if minor >= 25 {
		s.TombstonePossible = 35 // commit 4e63ae46e0
	}
	if minor >= 27 {
		s.TypeKeysOff, s.TypeKeyStride, s.TypeElemsOff, s.TypeElemStride = 88, 96, 104, 112
		s.TypeElemOff, s.TypeFlags, s.TypeSize = 120, 128, 136
	} else {
		s.TypeSlotSize, s.TypeElemOff, s.TypeFlags, s.TypeSize = 88, 96, 104, 112
	}
	return s
}

// ApplyMapsDWARF overrides the map offsets with what the binary's DWARF
// says (header, Swiss table, map type descriptor) and returns the fields
// where DWARF contradicted the built-in table, as "struct.field table→dwarf".
// Fields the DWARF lacks keep their table value. Tests use the returned
// list to check the tables against real builds.
func (l *Layout) ApplyMapsDWARF(d *dwarf.Data) ([]string, error) {
	var changed []string
	apply := func(typeName string, fields map[string]*Offset) error {
		names := make([]string, 0, len(fields))
		for f := range fields {
			names = append(names, f)
		}
		got, err := StructFields(d, typeName, names...)
		if err != nil {
			return err
		}
		for f, dst := range fields {
			v, ok := got[f]
			if !ok {
				continue
			}
			if Offset(v) != *dst {
				changed = append(changed, fmt.Sprintf("%s.%s %d→%d", typeName, f, *dst, v))
				*dst = Offset(v)
			}
		}
		return nil
	}
	if l.Maps == MapClassic {
		c := &l.Classic
		if err := apply("runtime.hmap", map[string]*Offset{
			"count": &c.Count, "flags": &c.Flags, "B": &c.B, "noverflow": &c.NOverflow, "hash0": &c.Hash0,
			"buckets": &c.Buckets, "oldbuckets": &c.OldBuckets, "nevacuate": &c.NEvacuate, "clearSeq": &c.ClearSeq, "extra": &c.Extra,
		}); err != nil {
			return changed, fmt.Errorf("hmap from DWARF: %w", err)
		}
		// runtime.maptype (1.19–1.20), abi.MapType (1.21–1.23), abi.OldMapType (1.24–1.25).
		lower := map[string]*Offset{"key": &c.TypeKey, "elem": &c.TypeElem, "bucket": &c.TypeBucket, "hasher": &c.TypeHasher,
			"keysize": &c.TypeKeySize, "elemsize": &c.TypeElemSize, "bucketsize": &c.TypeBucketSize, "flags": &c.TypeFlag}
		upper := map[string]*Offset{"Key": &c.TypeKey, "Elem": &c.TypeElem, "Bucket": &c.TypeBucket, "Hasher": &c.TypeHasher,
			"KeySize": &c.TypeKeySize, "ValueSize": &c.TypeElemSize, "BucketSize": &c.TypeBucketSize, "Flags": &c.TypeFlag}
		switch {
		case l.Version.Minor <= 20:
			_ = apply("runtime.maptype", lower)
		case l.Version.Minor <= 23:
			_ = apply("internal/abi.MapType", upper)
		default:
			_ = apply("internal/abi.OldMapType", upper)
		}
		l.Source = "dwarf"
		return changed, nil
	}
	s := &l.Swiss
	if err := apply("internal/runtime/maps.Map", map[string]*Offset{
		"used": &s.Used, "seed": &s.Seed, "dirPtr": &s.DirPtr, "dirLen": &s.DirLen, "globalDepth": &s.GlobalDepth,
		"globalShift": &s.GlobalShift, "writing": &s.Writing, "tombstonePossible": &s.TombstonePossible, "clearSeq": &s.ClearSeq,
	}); err != nil {
		return changed, fmt.Errorf("maps.Map from DWARF: %w", err)
	}
	if err := apply("internal/runtime/maps.table", map[string]*Offset{
		"used": &s.TableUsed, "capacity": &s.TableCapacity, "growthLeft": &s.TableGrowthLeft, "localDepth": &s.TableLocalDepth,
		"index": &s.TableIndex, "groups.data": &s.TableGroupsData, "groups.lengthMask": &s.TableGroupsLengthMask,
	}); err != nil {
		return changed, fmt.Errorf("maps.table from DWARF: %w", err)
	}
	typeName := "internal/abi.MapType" // 1.26+; SwissMapType in 1.24–1.25
	if l.Version.Minor <= 25 {
		typeName = "internal/abi.SwissMapType"
	}
	_ = apply(typeName, map[string]*Offset{
		"Key": &s.TypeKey, "Elem": &s.TypeElem, "Group": &s.TypeGroup, "Hasher": &s.TypeHasher, "GroupSize": &s.TypeGroupSize,
		"SlotSize": &s.TypeSlotSize, "ElemOff": &s.TypeElemOff, "KeysOff": &s.TypeKeysOff, "KeyStride": &s.TypeKeyStride,
		"ElemsOff": &s.TypeElemsOff, "ElemStride": &s.TypeElemStride, "Flags": &s.TypeFlags,
	})
	l.Source = "dwarf"
	return changed, nil
}
