package hmapdecode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mapsentry/mapsentry/goruntime"
)

// Memory reads the target's memory by virtual address. procmem.Reader
// satisfies it; tests use byte images. A short read must return an error.
type Memory interface {
	ReadAt(p []byte, addr uint64) (int, error)
}

// Request says which map to decode and how far to go.
type Request struct {
	// Addr is the map header address (*hmap or *maps.Map: the value of the
	// map variable).
	Addr uint64
	// Layout is the binary's runtime layout (goruntime.ForVersion, possibly
	// refined by DWARF).
	Layout *goruntime.Layout
	// TypeAddr is the map's type descriptor (*maptype / *abi.MapType, the
	// first argument of the runtime map functions), or 0 if unknown: slot
	// geometry is then inferred from the memory and the Result says so.
	TypeAddr uint64
	// TypesBase is moduledata.types of the module holding the type, used to
	// resolve type names (nameOff); 0 if unknown.
	TypesBase uint64
	// Keys asks for raw key and value bytes of every live slot. Off by
	// default: keys and values may be secrets.
	Keys bool
	// Limits bound the work; zero fields take defaults.
	Limits Limits
}

// Limits bound one decode. Zero fields take the defaults below.
type Limits struct {
	MaxBytes   int64         // total bytes read; default 512 MiB
	MaxBuckets int           // classic buckets (incl. overflow) or Swiss groups; default 1<<22
	MaxChain   int           // overflow buckets followed per chain; default 1024
	MaxTables  int           // Swiss directory length; default 1<<16
	MaxEntries int           // entries returned when Keys is set; default 1<<21
	MaxKeyText int           // bytes of a string key's text; default 4096
	Budget     time.Duration // wall time; default 1 s
	// Workers bounds the goroutines that walk a large map's tables or
	// bucket ranges in parallel (0: GOMAXPROCS, at most maxWorkers; 1: one
	// walk). The result does not depend on it.
	Workers int

	chunkBytes uint64 // bytes per bulk read (tests); 0: chunkBytes
}

func (l Limits) chunk() uint64 {
	if l.chunkBytes > 0 {
		return l.chunkBytes
	}
	return chunkBytes
}

// Default limits.
const (
	DefaultMaxBytes   = 512 << 20
	DefaultMaxBuckets = 1 << 22
	DefaultMaxChain   = 1024
	DefaultMaxTables  = 1 << 16
	DefaultMaxEntries = 1 << 21
	DefaultMaxKeyText = 4096
	DefaultBudget     = time.Second
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxBuckets <= 0 {
		l.MaxBuckets = DefaultMaxBuckets
	}
	if l.MaxChain <= 0 {
		l.MaxChain = DefaultMaxChain
	}
	if l.MaxTables <= 0 {
		l.MaxTables = DefaultMaxTables
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxKeyText <= 0 {
		l.MaxKeyText = DefaultMaxKeyText
	}
	if l.Budget <= 0 {
		l.Budget = DefaultBudget
	}
	return l
}

// Errors callers branch on.
var (
	// ErrLayout: the request has no usable layout (nil, or offsets the
	// layout does not know).
	ErrLayout = errors.New("no usable map layout")
	// ErrHeader: the map header itself could not be read; nothing decoded.
	ErrHeader = errors.New("map header unreadable")
	// errLimit stops a walk when a Limits bound is reached.
	errLimit = errors.New("decode limit reached")
)

// Decode reads and decodes the map at req.Addr. It returns an error only
// when nothing useful can be said (no layout, header unreadable); every
// other problem — unreadable buckets, inconsistencies, limits — is reported
// in the Result as anomalies and the Truncated flag.
func Decode(ctx context.Context, mem Memory, req Request) (*Result, error) {
	if mem == nil {
		return nil, errors.New("decode map: nil memory")
	}
	if req.Layout == nil {
		return nil, fmt.Errorf("decode map at %#x: %w", req.Addr, ErrLayout)
	}
	if req.Addr == 0 {
		return nil, fmt.Errorf("decode map at 0: nil map: %w", ErrHeader)
	}
	start := time.Now()
	d := newDecoder(ctx, mem, req, start)
	var err error
	switch req.Layout.Maps {
	case goruntime.MapClassic:
		d.res.Layout = string(goruntime.MapClassic)
		err = d.classic()
	case goruntime.MapSwiss:
		d.res.Layout = string(goruntime.MapSwiss)
		err = d.swiss()
	default:
		err = fmt.Errorf("decode map at %#x: map kind %q: %w", req.Addr, req.Layout.Maps, ErrLayout)
	}
	d.finish()
	d.res.Read = ReadReport{Bytes: d.r.bytes.Load(), Calls: d.r.calls.Load(), DurationNS: time.Since(start).Nanoseconds()}
	if err != nil {
		return nil, err
	}
	return d.res, nil
}

func newDecoder(ctx context.Context, mem Memory, req Request, start time.Time) *decoder {
	if ctx == nil {
		ctx = context.Background()
	}
	d := &decoder{
		req: req,
		lim: req.Limits.withDefaults(),
		res: &Result{
			Addr:      req.Addr,
			GoVersion: req.Layout.Version.String(),
			Flags:     []string{},
			Anomalies: []Anomaly{},
			TypeAddr:  req.TypeAddr,
		},
		anomalyCount: map[string]int{},
	}
	d.r = &reader{mem: mem, ctx: ctx, maxBytes: d.lim.MaxBytes, deadline: start.Add(d.lim.Budget)}
	d.r.view, _ = mem.(viewer)
	d.res.Stats.SlotHist = map[string]int64{}
	return d
}

// decoder carries one decode's state. A parallel walk forks it: each fork
// has its own result and counters and shares the request, the type and
// the reader; join merges a fork back in walk order.
type decoder struct {
	req          Request
	lim          Limits
	r            *reader
	res          *Result
	typ          *mapType
	units        int // buckets/groups visited, bounded by MaxBuckets
	anomalyCount map[string]int
	occ          occupancyBuilder
	entriesCut   bool // MaxEntries reached: entries stop, the walk goes on
	stop         bool // a walk limit was reached: the walk stops
	slots        [slotClasses]int64
	unitsBase    int // units when this fork was made
}

// maxAnomaliesPerCode bounds the listed anomalies of one code; the rest
// only count in Total.
const maxAnomaliesPerCode = 8

func (d *decoder) anomaly(code string, sev Severity, where, format string, args ...any) {
	d.anomalyCount[code]++
	if d.anomalyCount[code] > maxAnomaliesPerCode {
		return
	}
	d.res.Anomalies = append(d.res.Anomalies, Anomaly{Code: code, Severity: sev, Where: where, Detail: fmt.Sprintf(format, args...)})
}

// truncate records that a limit or the time budget stopped the walk.
func (d *decoder) truncate(where string, err error) {
	d.res.Truncated = true
	d.stop = true
	d.anomaly(CodeTruncated, SevWarning, where, "%v", err)
}

// readFailed classifies a failed read: a limit, or bytes a copy left out
// at its size bound, truncate the result; any other error is an
// unreadable-memory anomaly with the given code.
func (d *decoder) readFailed(code, where string, err error) {
	var cut interface{ Truncated() bool }
	if errors.Is(err, errLimit) || errors.As(err, &cut) && cut.Truncated() {
		d.truncate(where, err)
		return
	}
	d.anomaly(code, SevError, where, "%v", err)
}

// takeUnits reserves n buckets/groups against MaxBuckets.
func (d *decoder) takeUnits(n int) error {
	if n < 0 || d.units+n > d.lim.MaxBuckets || d.units+n < d.units {
		return fmt.Errorf("more than %d buckets/groups: %w", d.lim.MaxBuckets, errLimit)
	}
	d.units += n
	return nil
}

func (d *decoder) finish() {
	for i := range d.res.Anomalies {
		a := &d.res.Anomalies[i]
		if n := d.anomalyCount[a.Code]; n > 1 {
			// Total goes on the first listed anomaly of each code only.
			first := true
			for j := 0; j < i; j++ {
				if d.res.Anomalies[j].Code == a.Code {
					first = false
					break
				}
			}
			if first {
				a.Total = n
			}
		}
	}
	s := &d.res.Stats
	for c, n := range d.slots {
		if n > 0 {
			s.SlotHist[slotNames[c]] = n
		}
	}
	if s.Slots > 0 {
		s.LoadFactor = float64(s.EntriesFound) / float64(s.Slots)
	}
	d.res.Occupancy = d.occ.result()
}

// viewer is memory that hands out its bytes without copying them
// (procmem.Image, a copy taken while the target was held): the walks then
// read the copy in place.
type viewer interface {
	View(addr, n uint64) ([]byte, bool)
}

// reader bounds and counts reads, and enforces the time budget and ctx.
// Parallel walks share it.
type reader struct {
	mem      Memory
	view     viewer // mem, when it can hand out bytes in place
	ctx      context.Context
	maxBytes int64
	deadline time.Time
	bytes    atomic.Int64
	calls    atomic.Int64
}

// admit checks a read of n bytes at addr against the bounds.
func (r *reader) admit(n int, addr uint64) error {
	if addr == 0 {
		return fmt.Errorf("read %d bytes at 0: nil pointer", n)
	}
	if addr+uint64(n) < addr {
		return fmt.Errorf("read %d bytes at %#x: address wraps", n, addr)
	}
	if b := r.bytes.Load(); b+int64(n) > r.maxBytes {
		return fmt.Errorf("read %d bytes at %#x after %d: byte limit %d: %w", n, addr, b, r.maxBytes, errLimit)
	}
	if err := r.ctx.Err(); err != nil {
		return fmt.Errorf("read at %#x: %w: %w", addr, err, errLimit)
	}
	if time.Now().After(r.deadline) {
		return fmt.Errorf("read at %#x: time budget spent: %w", addr, errLimit)
	}
	return nil
}

// readView returns the n bytes at addr: in place when the memory can hand
// them out, else read into *buf, which grows to n when it must (so a walk
// over a copy allocates no buffer at all).
func (r *reader) readView(buf *[]byte, n uint64, addr uint64) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if r.view != nil {
		if err := r.admit(int(min(n, 1<<62)), addr); err != nil {
			return nil, err
		}
		if b, ok := r.view.View(addr, n); ok {
			r.calls.Add(1)
			r.bytes.Add(int64(len(b)))
			return b, nil
		}
	}
	if n > r.room() {
		return nil, fmt.Errorf("read %d bytes at %#x: byte limit %d: %w", n, addr, r.maxBytes, errLimit)
	}
	if uint64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	p := (*buf)[:n]
	if err := r.read(p, addr); err != nil {
		return nil, err
	}
	return p, nil
}

func (r *reader) read(p []byte, addr uint64) error {
	if len(p) == 0 {
		return nil
	}
	if err := r.admit(len(p), addr); err != nil {
		return err
	}
	r.calls.Add(1)
	n, err := r.mem.ReadAt(p, addr)
	if n > 0 && n <= len(p) {
		r.bytes.Add(int64(n))
	}
	if err != nil {
		return fmt.Errorf("read %d bytes at %#x: %w", len(p), addr, err)
	}
	if n != len(p) {
		return fmt.Errorf("read %d bytes at %#x: short read of %d", len(p), addr, n)
	}
	return nil
}

// room is how many bytes may still be read: no buffer is allocated larger
// than that, so hostile sizes cannot make us allocate more than MaxBytes.
func (r *reader) room() uint64 {
	b := r.bytes.Load()
	if b >= r.maxBytes {
		return 0
	}
	return uint64(r.maxBytes - b)
}

// check is the budget check for loops that do not read.
func (r *reader) check() error {
	if err := r.ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", err, errLimit)
	}
	if time.Now().After(r.deadline) {
		return fmt.Errorf("time budget spent: %w", errLimit)
	}
	return nil
}

func le64(b []byte, off uint64) uint64 {
	if off+8 > uint64(len(b)) || off+8 < off {
		return 0
	}
	return binary.LittleEndian.Uint64(b[off:])
}

func le32(b []byte, off uint64) uint32 {
	if off+4 > uint64(len(b)) || off+4 < off {
		return 0
	}
	return binary.LittleEndian.Uint32(b[off:])
}

func le16(b []byte, off uint64) uint16 {
	if off+2 > uint64(len(b)) || off+2 < off {
		return 0
	}
	return binary.LittleEndian.Uint16(b[off:])
}

func u8(b []byte, off uint64) uint8 {
	if off >= uint64(len(b)) {
		return 0
	}
	return b[off]
}

// off converts a layout offset that must be known; the layout tables and
// DWARF guarantee the map header fields we require, so an unknown one is a
// layout error.
func off(o goruntime.Offset, field string) (uint64, error) {
	v, err := o.Get(field)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrLayout, err)
	}
	return v, nil
}

// Slot classes, counted in an array on the hot path and named in
// Stats.SlotHist at the end.
const (
	slotEmptyRest = iota
	slotEmptyOne
	slotEvacuatedX
	slotEvacuatedY
	slotEvacuatedEmpty
	slotLive
	slotEmpty
	slotDeleted
	slotFull
	slotIllegal
	slotClasses
)

var slotNames = [slotClasses]string{"emptyRest", "emptyOne", "evacuatedX", "evacuatedY", "evacuatedEmpty", "live", "empty", "deleted", "full", "illegal"}
