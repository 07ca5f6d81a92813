package symbolizer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// pclntab header magics (internal/abi.Go118PCLnTabMagic, Go120PCLnTabMagic).
const (
	magic118 = 0xfffffff0 // Go 1.18–1.19: entry PCs as offsets from textStart
	magic120 = 0xfffffff1 // Go 1.20+: ":" in generated names, startLine in _func
)

// Bounds on what a hostile pclntab may make us do.
const (
	maxFuncs        = 4 << 20 // functions in one binary
	maxNameLen      = 4096    // bytes of one function or file name
	maxPCValueSteps = 1 << 18 // pc-value entries decoded for one lookup
	maxInlineDepth  = 64      // inlined frames under one physical frame
	maxInlineIndex  = 1 << 20 // entries in one function's inline tree
	defaultPages    = 1024    // 4 MiB of cached pclntab pages per Table
	memoEntries     = 8192    // PC -> frames results kept per Table
)

// Errors callers branch on.
var (
	// ErrNoPCLNTab: no pclntab found in the binary (not Go, or not 1.18+).
	ErrNoPCLNTab = errors.New("no Go pclntab")
	// ErrBadPCLNTab: the pclntab is malformed or truncated.
	ErrBadPCLNTab = errors.New("malformed pclntab")
	// ErrNoTextStart: Go 1.26+ pclntab without a trustworthy text base
	// (moduledata not found or inconsistent). Refusing beats a wrong base.
	ErrNoTextStart = errors.New("text start unknown")
)

// Options tune NewTable.
type Options struct {
	// TextStart is the address of runtime.text. Required for Go 1.26+,
	// whose pclntab header no longer carries it; for older versions it
	// must equal the header's value when both are given.
	TextStart uint64
	// GoFunc is moduledata.gofunc, the base of funcdata offsets; without it
	// inlined frames are not expanded.
	GoFunc uint64
	// Static reads the binary's static memory by virtual address (for the
	// inline trees under GoFunc). Optional.
	Static MemReader
	// MaxCachedPages bounds the pclntab bytes kept in memory (4 KiB pages).
	MaxCachedPages int
}

// ReadStatic reads the binary's static memory (its file-backed loadable
// segments) at link address addr: constants such as the runtime's fatal
// messages, readable after the process is gone.
func (t *Table) ReadStatic(p []byte, addr uint64) (int, error) {
	if t.static == nil {
		return 0, errors.New("static memory of the binary not available")
	}
	return t.static.ReadAt(p, addr)
}

// MemReader reads memory by virtual address: another process's memory, or
// a binary's static data. A short read is an error.
type MemReader interface {
	ReadAt(p []byte, addr uint64) (int, error)
}

// Table is a Go pclntab. It decodes functions lazily and keeps a bounded
// page cache and a bounded PC memo; it is safe for concurrent use.
type Table struct {
	c *pageCache

	magic     uint32
	quantum   uint64
	ptrSize   uint64
	nfunc     uint64
	textStart uint64
	funcSize  uint64 // fixed part of _func: 40 (1.18–1.19) or 44 (1.20+)

	funcnameOff, cuOff, filetabOff, pctabOff, pclnOff uint64

	gofunc uint64
	static MemReader

	// Moduledata found by Open, nil otherwise; where Open found the table.
	md  *Moduledata
	loc Location

	closer io.Closer

	memoMu   sync.Mutex
	memo     map[uint64][]Frame
	funcMemo map[uint64]Func
}

// Func is one function of the table.
type Func struct {
	Name       string `json:"name"`
	Entry      uint64 `json:"entry"` // virtual address of the first instruction
	End        uint64 `json:"end"`   // first address past the function
	StartLine  int    `json:"start_line,omitempty"`
	FuncID     uint8  `json:"func_id,omitempty"`
	funcOffset uint64 // offset of the _func record in the pclntab
	npcdata    uint32
	nfuncdata  uint8
	pcsp       uint32
	pcfile     uint32
	pcln       uint32
	cuOffset   uint32
}

// Frame is one source-level frame at a PC. For inlined calls one PC yields
// several frames, innermost first; all carry the same PC.
type Frame struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	PC       uint64 `json:"pc"`
	Entry    uint64 `json:"entry,omitempty"` // entry of the physical function
	Inlined  bool   `json:"inlined,omitempty"`
}

// NewTable parses a pclntab held by r (size bytes, offset 0 = pcHeader).
func NewTable(r io.ReaderAt, size int64, opt Options) (*Table, error) {
	pages := opt.MaxCachedPages
	if pages <= 0 {
		pages = defaultPages
	}
	t := &Table{c: newPageCache(r, size, pages), gofunc: opt.GoFunc, static: opt.Static,
		memo: make(map[uint64][]Frame), funcMemo: make(map[uint64]Func)}
	var hdr [8]byte
	if err := t.c.readAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("read pclntab header: %w: %w", ErrBadPCLNTab, err)
	}
	t.magic = binary.LittleEndian.Uint32(hdr[:])
	switch t.magic {
	case magic118:
		t.funcSize = 40
	case magic120:
		t.funcSize = 44
	default:
		return nil, fmt.Errorf("pclntab magic %#x: want Go 1.18+ (%#x or %#x): %w",
			t.magic, magic118, magic120, ErrBadPCLNTab)
	}
	if hdr[4] != 0 || hdr[5] != 0 {
		return nil, fmt.Errorf("pclntab header padding %#x %#x: %w", hdr[4], hdr[5], ErrBadPCLNTab)
	}
	t.quantum, t.ptrSize = uint64(hdr[6]), uint64(hdr[7])
	if t.quantum != 1 && t.quantum != 2 && t.quantum != 4 {
		return nil, fmt.Errorf("pclntab instruction quantum %d: %w", t.quantum, ErrBadPCLNTab)
	}
	if t.ptrSize != 8 {
		return nil, fmt.Errorf("pclntab pointer size %d: only 64-bit targets: %w", t.ptrSize, ErrBadPCLNTab)
	}
	var words [8]uint64
	for i := range words {
		v, err := t.u64(8 + uint64(i)*8)
		if err != nil {
			return nil, fmt.Errorf("read pclntab header: %w: %w", ErrBadPCLNTab, err)
		}
		words[i] = v
	}
	t.nfunc = words[0]
	hdrText := words[2]
	t.funcnameOff, t.cuOff, t.filetabOff, t.pctabOff, t.pclnOff = words[3], words[4], words[5], words[6], words[7]
	if t.nfunc == 0 || t.nfunc > maxFuncs {
		return nil, fmt.Errorf("pclntab function count %d: %w", t.nfunc, ErrBadPCLNTab)
	}
	for _, o := range []uint64{t.funcnameOff, t.cuOff, t.filetabOff, t.pctabOff, t.pclnOff} {
		if o < 72 || o >= uint64(size) {
			return nil, fmt.Errorf("pclntab table offset %#x outside %#x bytes: %w", o, size, ErrBadPCLNTab)
		}
	}
	// The function table: nfunc+1 pairs of uint32 after pclnOff.
	if ft := (t.nfunc + 1) * 8; t.pclnOff+ft > uint64(size) {
		return nil, fmt.Errorf("pclntab function table (%d entries) overruns %#x bytes: %w", t.nfunc, size, ErrBadPCLNTab)
	}
	switch {
	case hdrText != 0 && opt.TextStart != 0 && hdrText != opt.TextStart:
		return nil, fmt.Errorf("pclntab text start %#x, moduledata says %#x: %w", hdrText, opt.TextStart, ErrNoTextStart)
	case hdrText != 0:
		t.textStart = hdrText
	case opt.TextStart != 0:
		t.textStart = opt.TextStart
	default:
		// Go 1.26+ stores 0 here; the base must come from moduledata.
		return nil, fmt.Errorf("pclntab header has no text start (Go 1.26+) and none was given: %w", ErrNoTextStart)
	}
	return t, nil
}

// Close releases the file Open opened, if any.
func (t *Table) Close() error {
	if t.closer != nil {
		return t.closer.Close()
	}
	return nil
}

// Trim drops the cached pclntab pages and lookups: a table kept for a
// binary no process may crash in for hours should hold no memory beyond
// itself. Later lookups read the pages again.
func (t *Table) Trim() {
	t.c.reset()
	t.memoMu.Lock()
	// New maps: clear keeps a map's buckets.
	t.memo, t.funcMemo = make(map[uint64][]Frame), make(map[uint64]Func)
	t.memoMu.Unlock()
}

// TextStart is the base every function entry is relative to (runtime.text).
func (t *Table) TextStart() uint64 { return t.textStart }

// NumFuncs is the number of functions in the table.
func (t *Table) NumFuncs() int { return int(t.nfunc) }

// GoMinorHint is 19 for a Go 1.18/1.19 table and 20 for 1.20+ (the pclntab
// format alone cannot tell 1.20 from 1.27).
func (t *Table) GoMinorHint() int {
	if t.magic == magic118 {
		return 19
	}
	return 20
}

// Moduledata is what Open found, or nil.
func (t *Table) Moduledata() *Moduledata { return t.md }

// Location is where Open found the table (zero for NewTable).
func (t *Table) Location() Location { return t.loc }

func (t *Table) u32(off uint64) (uint32, error) {
	var b [4]byte
	if off > 1<<62 {
		return 0, errOutOfRange
	}
	if err := t.c.readAt(b[:], int64(off)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

func (t *Table) u64(off uint64) (uint64, error) {
	var b [8]byte
	if off > 1<<62 {
		return 0, errOutOfRange
	}
	if err := t.c.readAt(b[:], int64(off)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// cstring reads a NUL-terminated string at off, at most maxNameLen bytes.
func (t *Table) cstring(off uint64) (string, error) {
	var buf [128]byte
	var out []byte
	for len(out) < maxNameLen {
		n := uint64(len(buf))
		if rem := uint64(t.c.size) - off; off >= uint64(t.c.size) {
			return "", fmt.Errorf("string at %#x: %w", off, errOutOfRange)
		} else if rem < n {
			n = rem
		}
		if err := t.c.readAt(buf[:n], int64(off)); err != nil {
			return "", err
		}
		for i := uint64(0); i < n; i++ {
			if buf[i] == 0 {
				return string(append(out, buf[:i]...)), nil
			}
		}
		out = append(out, buf[:n]...)
		off += n
	}
	return "", fmt.Errorf("string at %#x longer than %d bytes: %w", off, maxNameLen, ErrBadPCLNTab)
}

// ftab returns entry i of the function table: (entry offset, func offset).
func (t *Table) ftab(i uint64) (entryOff, funcOff uint32, err error) {
	var b [8]byte
	if err := t.c.readAt(b[:], int64(t.pclnOff+i*8)); err != nil {
		return 0, 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), binary.LittleEndian.Uint32(b[4:]), nil
}

// FuncForPC returns the function containing pc.
func (t *Table) FuncForPC(pc uint64) (Func, bool) {
	f, err := t.funcForPC(pc)
	return f, err == nil
}

func (t *Table) funcForPC(pc uint64) (Func, error) {
	t.memoMu.Lock()
	f, ok := t.funcMemo[pc]
	t.memoMu.Unlock()
	if ok {
		return f, nil
	}
	f, err := t.searchFunc(pc)
	if err != nil {
		return f, err
	}
	t.memoMu.Lock()
	if len(t.funcMemo) >= memoEntries {
		clear(t.funcMemo)
	}
	t.funcMemo[pc] = f
	t.memoMu.Unlock()
	return f, nil
}

func (t *Table) searchFunc(pc uint64) (Func, error) {
	if pc < t.textStart {
		return Func{}, fmt.Errorf("pc %#x below text start %#x: %w", pc, t.textStart, errOutOfRange)
	}
	rel := pc - t.textStart
	if rel > 1<<32-1 {
		return Func{}, fmt.Errorf("pc %#x beyond text: %w", pc, errOutOfRange)
	}
	last, _, err := t.ftab(t.nfunc)
	if err != nil {
		return Func{}, fmt.Errorf("read function table: %w", err)
	}
	if uint32(rel) >= last {
		return Func{}, fmt.Errorf("pc %#x past end of text: %w", pc, errOutOfRange)
	}
	// Largest i with entry(i) <= rel. sort.Search cannot report read
	// errors, so remember the first one.
	var rerr error
	i := sort.Search(int(t.nfunc), func(i int) bool {
		e, _, err := t.ftab(uint64(i))
		if err != nil && rerr == nil {
			rerr = err
		}
		return e > uint32(rel)
	}) - 1
	if rerr != nil {
		return Func{}, fmt.Errorf("search function table: %w", rerr)
	}
	if i < 0 {
		return Func{}, fmt.Errorf("pc %#x before first function: %w", pc, errOutOfRange)
	}
	return t.funcAt(uint64(i))
}

// funcAt decodes function i of the function table.
func (t *Table) funcAt(i uint64) (Func, error) {
	if i >= t.nfunc {
		return Func{}, fmt.Errorf("function index %d of %d: %w", i, t.nfunc, errOutOfRange)
	}
	entry, foff, err := t.ftab(i)
	if err != nil {
		return Func{}, fmt.Errorf("function %d: %w", i, err)
	}
	next, _, err := t.ftab(i + 1)
	if err != nil {
		return Func{}, fmt.Errorf("function %d: %w", i, err)
	}
	if next < entry {
		return Func{}, fmt.Errorf("function %d: unsorted function table: %w", i, ErrBadPCLNTab)
	}
	off := t.pclnOff + uint64(foff)
	var b [44]byte
	rec := b[:t.funcSize]
	if err := t.c.readAt(rec, int64(off)); err != nil {
		return Func{}, fmt.Errorf("function %d record at %#x: %w: %w", i, off, ErrBadPCLNTab, err)
	}
	le := binary.LittleEndian
	if le.Uint32(rec[0:]) != entry {
		return Func{}, fmt.Errorf("function %d: record entry %#x, table says %#x: %w",
			i, le.Uint32(rec[0:]), entry, ErrBadPCLNTab)
	}
	f := Func{
		Entry:      t.textStart + uint64(entry),
		End:        t.textStart + uint64(next),
		funcOffset: off,
		pcsp:       le.Uint32(rec[16:]),
		pcfile:     le.Uint32(rec[20:]),
		pcln:       le.Uint32(rec[24:]),
		npcdata:    le.Uint32(rec[28:]),
		cuOffset:   le.Uint32(rec[32:]),
	}
	tail := rec[36:]
	if t.funcSize == 44 {
		f.StartLine = int(int32(le.Uint32(rec[36:])))
		tail = rec[40:]
	}
	f.FuncID, f.nfuncdata = tail[0], tail[3]
	if f.npcdata > 1024 {
		return Func{}, fmt.Errorf("function %d: %d pcdata tables: %w", i, f.npcdata, ErrBadPCLNTab)
	}
	nameOff := int32(le.Uint32(rec[4:]))
	if nameOff < 0 {
		return Func{}, fmt.Errorf("function %d: name offset %d: %w", i, nameOff, ErrBadPCLNTab)
	}
	if f.Name, err = t.cstring(t.funcnameOff + uint64(nameOff)); err != nil {
		return Func{}, fmt.Errorf("function %d name: %w", i, err)
	}
	return f, nil
}

// LookupFunc finds a function by its pclntab name ("runtime.fatal",
// "main.(*T).M", "internal/runtime/maps.fatal"). It scans the table; callers
// needing many names should use LookupFuncs.
func (t *Table) LookupFunc(name string) (Func, bool) {
	m, err := t.LookupFuncs(name)
	if err != nil {
		return Func{}, false
	}
	f, ok := m[name]
	return f, ok
}

// LookupFuncs finds several functions in one scan of the table. Names not
// found are absent from the result.
func (t *Table) LookupFuncs(names ...string) (map[string]Func, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]Func, len(names))
	err := t.Funcs(func(f Func) bool {
		if want[f.Name] {
			if _, dup := out[f.Name]; !dup {
				out[f.Name] = f
			}
		}
		return len(out) < len(want)
	})
	return out, err
}

// Funcs calls fn for every function in address order until fn returns
// false. Only the current function is in memory.
func (t *Table) Funcs(fn func(Func) bool) error {
	for i := uint64(0); i < t.nfunc; i++ {
		f, err := t.funcAt(i)
		if err != nil {
			return err
		}
		if !fn(f) {
			return nil
		}
	}
	return nil
}

// pcvalue decodes the pc-value table at pctab offset off for f and returns
// the value at targetpc (-1 with an error when not covered).
func (t *Table) pcvalue(f *Func, off uint32, targetpc uint64) (int32, error) {
	budget := maxPCValueSteps
	return t.pcvalueBudget(f, off, targetpc, &budget)
}

// pcvalueBudget is pcvalue charging the decoded entries to *budget, so that
// one lookup that decodes several tables stays bounded as a whole.
func (t *Table) pcvalueBudget(f *Func, off uint32, targetpc uint64, budget *int) (int32, error) {
	if off == 0 {
		return -1, fmt.Errorf("%s: no pc-value table", f.Name)
	}
	s := byteStream{c: t.c, off: t.pctabOff + uint64(off)}
	val := int32(-1)
	pc := f.Entry
	for n := 0; *budget > 0; n++ {
		*budget--
		uv, err := s.uvarint()
		if err != nil {
			return -1, fmt.Errorf("%s pc-value table: %w", f.Name, err)
		}
		if uv == 0 && n > 0 {
			return -1, fmt.Errorf("%s: pc %#x not in pc-value table", f.Name, targetpc)
		}
		var vdelta int32
		if uv&1 != 0 {
			vdelta = int32(^(uv >> 1))
		} else {
			vdelta = int32(uv >> 1)
		}
		pcd, err := s.uvarint()
		if err != nil {
			return -1, fmt.Errorf("%s pc-value table: %w", f.Name, err)
		}
		pc += uint64(pcd) * t.quantum
		val += vdelta
		if targetpc < pc {
			return val, nil
		}
		if pc >= f.End {
			break
		}
	}
	if *budget <= 0 {
		return -1, fmt.Errorf("%s: pc-value decoding budget exhausted at %#x: %w", f.Name, targetpc, ErrBadPCLNTab)
	}
	return -1, fmt.Errorf("%s: pc %#x not in pc-value table: %w", f.Name, targetpc, ErrBadPCLNTab)
}

// byteStream reads varints from the page cache in small chunks.
type byteStream struct {
	c   *pageCache
	off uint64
	buf [64]byte
	n   int // valid bytes in buf
	i   int
}

func (s *byteStream) byte() (byte, error) {
	if s.i >= s.n {
		n := uint64(len(s.buf))
		if s.off >= uint64(s.c.size) {
			return 0, fmt.Errorf("varint at %#x: %w", s.off, errOutOfRange)
		}
		if rem := uint64(s.c.size) - s.off; rem < n {
			n = rem
		}
		if err := s.c.readAt(s.buf[:n], int64(s.off)); err != nil {
			return 0, err
		}
		s.off += n
		s.n, s.i = int(n), 0
	}
	b := s.buf[s.i]
	s.i++
	return b, nil
}

func (s *byteStream) uvarint() (uint32, error) {
	var v uint32
	for shift := uint(0); shift < 35; shift += 7 {
		b, err := s.byte()
		if err != nil {
			return 0, err
		}
		v |= uint32(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("varint too long: %w", ErrBadPCLNTab)
}

// fileLine returns the file and line of pc inside physical function f.
func (t *Table) fileLine(f *Func, pc uint64) (string, int, error) {
	budget := maxPCValueSteps
	return t.fileLineBudget(f, pc, &budget)
}

func (t *Table) fileLineBudget(f *Func, pc uint64, budget *int) (string, int, error) {
	line, err := t.pcvalueBudget(f, f.pcln, pc, budget)
	if err != nil {
		return "?", 0, err
	}
	fileno, err := t.pcvalueBudget(f, f.pcfile, pc, budget)
	if err != nil {
		return "?", int(line), err
	}
	if fileno < 0 {
		return "?", int(line), fmt.Errorf("%s: file index %d: %w", f.Name, fileno, ErrBadPCLNTab)
	}
	cu, err := t.u32(t.cuOff + (uint64(f.cuOffset)+uint64(fileno))*4)
	if err != nil {
		return "?", int(line), fmt.Errorf("%s: compilation unit table: %w", f.Name, err)
	}
	if cu == ^uint32(0) {
		return "?", int(line), nil
	}
	file, err := t.cstring(t.filetabOff + uint64(cu))
	if err != nil {
		return "?", int(line), fmt.Errorf("%s: file name: %w", f.Name, err)
	}
	return file, int(line), nil
}

// PCLine returns the file and line of pc (the innermost inlined position).
func (t *Table) PCLine(pc uint64) (file string, line int, ok bool) {
	f, err := t.funcForPC(pc)
	if err != nil {
		return "", 0, false
	}
	file, line, err = t.fileLine(&f, pc)
	return file, line, err == nil
}

// SPDelta returns the stack pointer offset at pc relative to the
// function's entry SP (the frame size so far, excluding the return
// address). It drives unwinding where frame pointers are unusable.
func (t *Table) SPDelta(f *Func, pc uint64) (int64, error) {
	v, err := t.pcvalue(f, f.pcsp, pc)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("%s: negative sp delta %d at %#x: %w", f.Name, v, pc, ErrBadPCLNTab)
	}
	return int64(v), nil
}

// pcdataOffset returns the pctab offset of f's pcdata table i (0: none).
func (t *Table) pcdataOffset(f *Func, i uint32) uint32 {
	if i >= f.npcdata {
		return 0
	}
	v, err := t.u32(f.funcOffset + t.funcSize + uint64(i)*4)
	if err != nil {
		return 0
	}
	return v
}

// funcdataOffset returns the offset from gofunc of f's funcdata i, or false.
func (t *Table) funcdataOffset(f *Func, i uint8) (uint32, bool) {
	if i >= f.nfuncdata {
		return 0, false
	}
	v, err := t.u32(f.funcOffset + t.funcSize + uint64(f.npcdata)*4 + uint64(i)*4)
	if err != nil || v == ^uint32(0) {
		return 0, false
	}
	return v, true
}

// PCToFrames returns the source frames at pc, innermost (deepest inlined)
// first, ending with the physical function. It returns nil when pc is not
// in any function. The PC of a return address should be passed minus one
// so that it falls inside the call instruction.
func (t *Table) PCToFrames(pc uint64) []Frame {
	t.memoMu.Lock()
	if fr, ok := t.memo[pc]; ok {
		t.memoMu.Unlock()
		return fr
	}
	t.memoMu.Unlock()
	f, err := t.funcForPC(pc)
	if err != nil {
		return nil
	}
	frames := t.inlineFrames(&f, pc)
	t.memoMu.Lock()
	if len(t.memo) >= memoEntries {
		clear(t.memo)
	}
	t.memo[pc] = frames
	t.memoMu.Unlock()
	return frames
}

const (
	pcdataInlTreeIndex = 2  // abi.PCDATA_InlTreeIndex
	funcdataInlTree    = 3  // abi.FUNCDATA_InlTree
	inlinedCallSize118 = 20 // parent int16, funcID, _, file, line, func_, parentPc
	inlinedCallSize120 = 16 // funcID, _[3], nameOff, parentPc, startLine
)

func (t *Table) inlineFrames(f *Func, pc uint64) []Frame {
	budget := maxPCValueSteps
	var frames []Frame
	cur := pc
	inlOff := t.pcdataOffset(f, pcdataInlTreeIndex)
	treeOff, hasTree := t.funcdataOffset(f, funcdataInlTree)
	if inlOff != 0 && hasTree && t.gofunc != 0 && t.static != nil {
		tree := t.gofunc + uint64(treeOff)
		for depth := 0; depth < maxInlineDepth; depth++ {
			ix, err := t.pcvalueBudget(f, inlOff, cur, &budget)
			if err != nil || ix < 0 || ix >= maxInlineIndex {
				break
			}
			name, parentPC, err := t.inlinedCall(tree, uint64(ix))
			if err != nil {
				break
			}
			file, line, _ := t.fileLineBudget(f, cur, &budget)
			frames = append(frames, Frame{Function: name, File: file, Line: line, PC: pc, Entry: f.Entry, Inlined: true})
			next := f.Entry + uint64(parentPC)
			if parentPC < 0 || next >= f.End {
				break
			}
			cur = next
		}
	}
	file, line, _ := t.fileLineBudget(f, cur, &budget)
	return append(frames, Frame{Function: f.Name, File: file, Line: line, PC: pc, Entry: f.Entry})
}

// inlinedCall reads entry ix of an inline tree at address tree.
//
// Go 1.18–1.19 (runtime.inlinedCall, 20 B): parent int16, funcID uint8, _,
// file int32, line int32, func_ int32 @12, parentPc int32 @16.
// Go 1.20+ (16 B): funcID uint8, _ [3]byte, nameOff int32 @4, parentPc @8,
// startLine @12.
func (t *Table) inlinedCall(tree, ix uint64) (string, int32, error) {
	var b [20]byte
	var nameOff, parentPC int32
	if t.magic == magic118 {
		if _, err := t.static.ReadAt(b[:inlinedCallSize118], tree+ix*inlinedCallSize118); err != nil {
			return "", 0, err
		}
		nameOff = int32(binary.LittleEndian.Uint32(b[12:]))
		parentPC = int32(binary.LittleEndian.Uint32(b[16:]))
	} else {
		if _, err := t.static.ReadAt(b[:inlinedCallSize120], tree+ix*inlinedCallSize120); err != nil {
			return "", 0, err
		}
		nameOff = int32(binary.LittleEndian.Uint32(b[4:]))
		parentPC = int32(binary.LittleEndian.Uint32(b[8:]))
	}
	if nameOff < 0 {
		return "", 0, fmt.Errorf("inlined call %d: name offset %d: %w", ix, nameOff, ErrBadPCLNTab)
	}
	name, err := t.cstring(t.funcnameOff + uint64(nameOff))
	return name, parentPC, err
}
