package goruntime

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
