package hmapdecode

// Anomaly codes. They are a stable contract (docs/hmapdecode.md lists each
// with its meaning); add new codes, never rename or reuse one.
const (
	// CodeCountMismatch: the header's count/used differs from the live
	// entries found (normal only while a writer is mid-update).
	CodeCountMismatch = "count_mismatch"
	// CodeWritingFlag: hashWriting (classic) or writing (Swiss) is set: a
	// write was in progress when memory was read — the concurrent writer's
	// footprint.
	CodeWritingFlag = "writing_flag_set"
	// CodeIteratorDuringWrite: classic iterator/oldIterator flag together
	// with hashWriting.
	CodeIteratorDuringWrite = "iterator_during_write"
	// CodeOldBuckets: oldbuckets inconsistent with buckets, B, nevacuate
	// or the sameSizeGrow flag.
	CodeOldBuckets = "oldbuckets_inconsistent"
	// CodeEvacuatedInLive: an evacuated marker (tophash 2..4 in slot 0) in
	// a bucket of the current array, where nothing is ever evacuated.
	CodeEvacuatedInLive = "evacuated_in_live_bucket"
	// CodeEvacuatedMixed: an old bucket marked evacuated still holds a
	// live tophash.
	CodeEvacuatedMixed = "evacuated_bucket_mixed"
	// CodeTopHashBelowMin: a slot of a live bucket holds 2..4, a value
	// below minTopHash that only evacuated buckets may hold.
	CodeTopHashBelowMin = "tophash_below_min"
	// CodeEmptyRestThenLive: a live slot after an emptyRest marker in the
	// same bucket chain; lookups stop at emptyRest and miss it.
	CodeEmptyRestThenLive = "empty_rest_then_live"
	// CodeOverflowCycle: an overflow chain leads back to itself.
	CodeOverflowCycle = "overflow_cycle"
	// CodeOverflowUnmapped: an overflow pointer is misaligned or points
	// outside readable memory.
	CodeOverflowUnmapped = "overflow_unmapped"
	// CodeOverflowShared: one overflow bucket is reached by two chains.
	CodeOverflowShared = "overflow_shared"
	// CodeTableInconsistent: a Swiss table's used, capacity, growthLeft or
	// group count disagree with each other or with its control bytes.
	CodeTableInconsistent = "table_inconsistent"
	// CodeIllegalCtrl: a control byte that is neither empty (0x80),
	// deleted (0xFE) nor full (0x00–0x7F).
	CodeIllegalCtrl = "illegal_ctrl"
	// CodeDirectory: Swiss directory inconsistent: dirLen vs globalDepth,
	// globalShift, localDepth > globalDepth, table index mismatch, a table
	// not spanning its 2^(global−local) consecutive slots, nil entries.
	CodeDirectory = "directory_inconsistent"
	// CodeHeader: header values impossible on their own (B ≥ 64, negative
	// count, unknown flag bits, a small map with more than 8 entries, …).
	CodeHeader = "header_inconsistent"
	// CodeUnreadable: a bucket array, group array, table or directory the
	// header points to could not be read.
	CodeUnreadable = "memory_unreadable"
	// CodeTypeInvalid: the type descriptor at TypeAddr is unreadable, not
	// a map type, or its sizes contradict each other; it was not used.
	CodeTypeInvalid = "type_invalid"
	// CodeTruncated: a Limits bound (bytes, buckets/groups, chain length,
	// tables, entries) or the time budget stopped the walk; Truncated is set.
	CodeTruncated = "read_truncated"
)

// Runtime constants unchanged from Go 1.19 to 1.27.
const (
	bucketCnt = 8 // slots per classic bucket and per Swiss group

	// Classic tophash values (runtime/map.go).
	emptyRest      = 0
	emptyOne       = 1
	evacuatedX     = 2
	evacuatedY     = 3
	evacuatedEmpty = 4
	minTopHash     = 5

	// Classic hmap.flags.
	flagIterator     = 1
	flagOldIterator  = 2
	flagHashWriting  = 4
	flagSameSizeGrow = 8

	// Swiss control bytes (internal/runtime/maps/group.go).
	ctrlEmpty   = 0x80
	ctrlDeleted = 0xFE

	// Swiss: a table never holds more than 1024 slots; above that it splits.
	maxTableCapacity = 1024
	maxAvgGroupLoad  = 7
)
