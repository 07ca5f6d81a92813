package hmapdecode

import (
	"encoding/hex"
	"encoding/json"
)

// Result is everything decoded about one map. It is the crash report's
// "map" field; JSON names are a contract (docs/hmapdecode.md).
type Result struct {
	Addr      uint64 `json:"addr"`
	Layout    string `json:"layout"` // "classic" or "swiss"
	GoVersion string `json:"go_version,omitempty"`
	// GoType is the map's Go type, e.g. "map[string]*main.Session", when the
	// type descriptor and the module's types base were known.
	GoType   string `json:"go_type,omitempty"`
	KeyType  string `json:"key_type,omitempty"`
	ElemType string `json:"elem_type,omitempty"`
	TypeAddr uint64 `json:"type_addr,omitempty"`
	// TypeSource says how slot geometry was found: "descriptor" (read from
	// the map type), "inferred" (guessed from the memory's own consistency;
	// see Note) or "none" (header and control/tophash bytes only).
	TypeSource string `json:"type_source"`
	// Note explains in words how the map was found and decoded when that is
	// not the plain case (type unknown, inferred, header only).
	Note string `json:"note,omitempty"`

	// Count is the header's own entry count (hmap.count or Map.used).
	Count   int64          `json:"count"`
	Classic *ClassicHeader `json:"classic,omitempty"`
	Swiss   *SwissHeader   `json:"swiss,omitempty"`
	// Flags lists the names of set header flags: iterator, oldIterator,
	// hashWriting, sameSizeGrow (classic) or writing, tombstonePossible
	// (Swiss).
	Flags  []string `json:"flags_decoded"`
	Growth *Growth  `json:"growth,omitempty"`

	Stats     Stats      `json:"stats"`
	Occupancy Occupancy  `json:"occupancy"`
	Tables    []Table    `json:"tables,omitempty"`
	Anomalies []Anomaly  `json:"anomalies"`
	Truncated bool       `json:"truncated"`
	Entries   []Entry    `json:"entries,omitempty"`
	Read      ReadReport `json:"read"`
}

// ClassicHeader is runtime.hmap as read.
type ClassicHeader struct {
	Count      int64  `json:"count"`
	Flags      uint8  `json:"flags"`
	B          uint8  `json:"B"`
	NOverflow  uint16 `json:"noverflow"`
	Hash0      uint32 `json:"hash0"`
	Buckets    uint64 `json:"buckets"`
	OldBuckets uint64 `json:"oldbuckets"`
	NEvacuate  uint64 `json:"nevacuate"`
	ClearSeq   uint64 `json:"clear_seq,omitempty"` // 1.24/1.25 noswissmap only
	Extra      uint64 `json:"extra"`
	BucketSize uint64 `json:"bucket_size,omitempty"`
	KeySize    uint64 `json:"key_slot_size,omitempty"`
	ElemSize   uint64 `json:"elem_slot_size,omitempty"`
}

// SwissHeader is internal/runtime/maps.Map as read.
type SwissHeader struct {
	Used              uint64 `json:"used"`
	Seed              uint64 `json:"seed"`
	DirPtr            uint64 `json:"dir_ptr"`
	DirLen            int64  `json:"dir_len"`
	GlobalDepth       uint8  `json:"global_depth"`
	GlobalShift       uint8  `json:"global_shift"`
	Writing           uint8  `json:"writing"`
	TombstonePossible *bool  `json:"tombstone_possible,omitempty"` // 1.25+
	ClearSeq          uint64 `json:"clear_seq"`
	Small             bool   `json:"small"` // dirLen == 0: dirPtr is one group
	GroupSize         uint64 `json:"group_size,omitempty"`
}

// Table is one Swiss table, listed once however many directory slots
// point at it.
type Table struct {
	Addr        uint64 `json:"addr"`
	DirIndex    int    `json:"dir_index"` // first directory slot
	DirSlots    int    `json:"dir_slots"` // how many slots point at it
	Used        uint16 `json:"used"`
	Capacity    uint16 `json:"capacity"`
	GrowthLeft  uint16 `json:"growth_left"`
	LocalDepth  uint8  `json:"local_depth"`
	Index       int64  `json:"index"`
	Groups      uint64 `json:"groups"`
	GroupsAddr  uint64 `json:"groups_addr"`
	Found       int    `json:"entries_found"`
	Tombstones  int    `json:"tombstones"`
	NotWalked   bool   `json:"not_walked,omitempty"`
	ReadFailure string `json:"read_failure,omitempty"`
}

// Growth is the classic map's incremental growth state.
type Growth struct {
	Growing        bool   `json:"growing"`
	SameSize       bool   `json:"same_size"`
	OldBuckets     uint64 `json:"old_buckets"`     // old bucket count
	Evacuated      uint64 `json:"evacuated"`       // old buckets found evacuated
	Pending        uint64 `json:"pending"`         // old buckets still holding entries
	NEvacuate      uint64 `json:"nevacuate"`       // runtime's evacuation mark
	EntriesInOld   int64  `json:"entries_in_old"`  // live entries still in old buckets
	ProgressPermil int    `json:"progress_permil"` // evacuated / old buckets, ‰
}

// Stats summarise what the walk found.
type Stats struct {
	EntriesFound int64 `json:"entries_found"`
	// Buckets counts primary buckets (classic, 2^B); Overflow the overflow
	// buckets reached through chains; Groups and Tables the Swiss units.
	Buckets  uint64 `json:"buckets,omitempty"`
	Overflow uint64 `json:"overflow_buckets,omitempty"`
	Groups   uint64 `json:"groups,omitempty"`
	Tables   int    `json:"tables,omitempty"`
	Slots    uint64 `json:"slots"`
	// LoadFactor is entries found per slot (0..1). AvgPerBucket is the
	// runtime's own measure for classic maps, count / 2^B (grows at 6.5).
	LoadFactor   float64 `json:"load_factor"`
	AvgPerBucket float64 `json:"avg_per_bucket,omitempty"`
	// Tombstones: Swiss deleted control bytes; classic emptyOne slots
	// (deleted or never filled before a later fill).
	Tombstones int64 `json:"tombstones"`
	// OccupancyHist[i] is how many buckets/groups hold i live entries.
	OccupancyHist [9]int64 `json:"occupancy_hist"`
	// ChainHist[i] is how many classic chains have i overflow buckets
	// (the last cell counts i and more).
	ChainHist []int64 `json:"chain_hist,omitempty"`
	MaxChain  int     `json:"max_chain,omitempty"`
	// SlotHist counts tophash classes (emptyRest, emptyOne, evacuatedX,
	// evacuatedY, evacuatedEmpty, live) or control classes (empty, deleted,
	// full, illegal).
	SlotHist map[string]int64 `json:"slot_hist"`
	// H2Hist counts Swiss full control bytes by their top 3 bits of H2
	// (8 cells), or classic live tophash values by top 3 bits; a skew means
	// a poor hash or a flood.
	HashHist [8]int64 `json:"hash_hist"`
}

// Occupancy is a downsampled matrix of live entries per bucket chain or
// group, row-major, ready for a heat map. Cell i covers units
// [i*Span, (i+1)*Span); its value is the mean number of live entries per
// unit (0–8; a classic chain can exceed 8).
type Occupancy struct {
	Units int       `json:"units"`
	Span  int       `json:"span"`
	Cols  int       `json:"cols"`
	Rows  int       `json:"rows"`
	Cells []float64 `json:"cells"`
}

// Severity grades an anomaly.
type Severity string

const (
	SevInfo    Severity = "info"
	SevWarning Severity = "warning"
	SevError   Severity = "error"
)

// Anomaly is one thing wrong (or notable) about the map. Code is stable
// and documented; Where names the location (e.g. "b12.o1.s3", "t2.g7.s5",
// "header"); Total, on the first anomaly of a code, counts every
// occurrence including those not listed.
type Anomaly struct {
	Code     string   `json:"code"`
	Severity Severity `json:"severity"`
	Where    string   `json:"where"`
	Detail   string   `json:"detail"`
	Total    int      `json:"total,omitempty"`
}

// Entry is one live slot, returned only when Request.Keys is set: keys and
// values may be secrets.
type Entry struct {
	Where string `json:"where"`
	Key   Hex    `json:"key"`
	Elem  Hex    `json:"elem"`
	// KeyString is the key's text when the key type is string.
	KeyString *string `json:"key_string,omitempty"`
	// Old marks an entry still in a not yet evacuated classic old bucket.
	Old bool `json:"old,omitempty"`
}

// Hex is raw bytes that marshal as a hex string.
type Hex []byte

// MarshalJSON implements json.Marshaler.
func (h Hex) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// UnmarshalJSON implements json.Unmarshaler.
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// ReadReport accounts for the memory reads of one decode.
type ReadReport struct {
	Bytes      int64 `json:"bytes"`
	Calls      int64 `json:"calls"`
	DurationNS int64 `json:"duration_ns"`
}
