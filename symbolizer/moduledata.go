package symbolizer

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrNoModuledata means runtime.firstmoduledata could not be located or did
// not pass the consistency checks against the ELF sections.
var ErrNoModuledata = errors.New("moduledata not found")

// Moduledata is the part of runtime.moduledata that the symbolizer and
// decoders need, read from a binary's static data. All fields are virtual
// addresses.
type Moduledata struct {
	Addr     uint64 `json:"addr"`      // address of runtime.firstmoduledata
	PCHeader uint64 `json:"pc_header"` // start of .gopclntab
	// Text/EText bound the Go text (runtime.text .. runtime.etext); Text is
	// the base of pclntab entry offsets.
	Text, EText  uint64
	MinPC, MaxPC uint64
	NoPtrData    uint64
	ENoPtrData   uint64
	Data, EData  uint64
	BSS, EBSS    uint64
	NoPtrBSS     uint64
	ENoPtrBSS    uint64
	End          uint64
	// Types/ETypes bound the type descriptors: a type's name offset
	// (abi.Type.Str) is relative to Types.
	Types, ETypes uint64
	Rodata        uint64
	// GoFunc is the base of funcdata offsets (go:func.*).
	GoFunc uint64
	// Layout names the moduledata layout that matched: "go1.19",
	// "go1.20-1.26" or "go1.27".
	Layout string
	// pclnSize is the pclntab bytes its slices span.
	pclnSize uint64
}

// Word indices of moduledata fields (64-bit). Common to 1.19–1.27 up to
// enoptrbss; then 1.20 inserted covctrs/ecovctrs before end, and 1.27
// inserted typedesclen between types and etypes plus itaboffset/itabsize
// before rodata (runtime/symtab.go at each release tag).
const (
	mdPCHeader  = 0
	mdFuncname  = 1
	mdMinPC     = 20
	mdText      = 22
	mdNoPtrData = 24
	mdWords     = 48
)

type mdLayout struct {
	name                               string
	end, types, etypes, rodata, gofunc int
}

// mdLayouts is a constant table (arrays are values: callers get copies).
var mdLayouts = [...]mdLayout{
	{name: "go1.19", end: 32, types: 35, etypes: 36, rodata: 37, gofunc: 38},
	{name: "go1.20-1.26", end: 34, types: 37, etypes: 38, rodata: 39, gofunc: 40},
	{name: "go1.27", end: 34, types: 37, etypes: 39, rodata: 42, gofunc: 43},
}

// layoutsFor orders the candidate layouts by the Go minor version (-1:
// unknown 1.20+, try both; the checks must then single one out).
func layoutsFor(minor int) []mdLayout {
	switch {
	case minor < 0:
		return mdLayouts[1:]
	case minor <= 19:
		return mdLayouts[:1]
	case minor <= 26:
		return mdLayouts[1:2]
	default:
		return mdLayouts[2:]
	}
}

// FindModuledata locates runtime.firstmoduledata in f, wherever the
// pclntab lies (Locate). goMinor is the Go minor version from buildinfo (0
// when unknown).
func FindModuledata(f *elf.File, goMinor int) (*Moduledata, error) {
	_, md, mdErr, err := Locate(f, goMinor)
	if err != nil {
		return nil, fmt.Errorf("find moduledata: %w", err)
	}
	if md == nil {
		return nil, mdErr
	}
	return md, nil
}

// findModuledata finds the moduledata whose pcHeader is loc.Addr: scanning
// the sections Go puts it in (.go.module since 1.26, .noptrdata before),
// then the runtime.firstmoduledata symbol, then every other writable data
// range, and accepting only a candidate that passes readModuledata's
// checks. loc.Size 0 means unknown (the header scan).
func findModuledata(f *elf.File, mem *ELFMem, loc Location, goMinor int) (*Moduledata, error) {
	var errs []error
	budget := uint64(maxScanBytes)
	try := func(spans []span) *Moduledata {
		var md *Moduledata
		_, err := scanSpans(mem, spans, addrScan(loc.Addr), &budget, func(a uint64) bool {
			m, err := readModuledata(f, mem, a, loc, goMinor)
			if err != nil {
				errs = append(errs, fmt.Errorf("candidate at %#x: %w", a, err))
				return len(errs) > maxHeaderCandidates
			}
			md = m
			return true
		})
		if err != nil {
			errs = append(errs, err)
		}
		return md
	}
	var first, rest []span
	for _, s := range dataSpans(f, true) {
		if s.name == ".go.module" || s.name == ".noptrdata" {
			first = append(first, s)
		} else {
			rest = append(rest, s)
		}
	}
	if md := try(first); md != nil {
		return md, nil
	}
	if syms, err := lookupSymbols(f, "runtime.firstmoduledata"); err == nil {
		if s, ok := syms["runtime.firstmoduledata"]; ok {
			md, err := readModuledata(f, mem, s.Value, loc, goMinor)
			if err == nil {
				return md, nil
			}
			errs = append(errs, fmt.Errorf("runtime.firstmoduledata at %#x: %w", s.Value, err))
		}
	}
	if md := try(rest); md != nil {
		return md, nil
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no pointer to the pclntab at %#x in the data: %w", loc.Addr, ErrNoModuledata)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoModuledata, errors.Join(errs...))
}

// maxScanBytes bounds the bytes read by one scan of a binary's data.
const maxScanBytes = 512 << 20

// Moduledata word indices of the pclntab slices (Go 1.18+): funcnametab,
// cutab, filetab, pctab, pclntable, ftab, each {ptr, len, cap}.
const (
	mdCutab     = 4
	mdFiletab   = 7
	mdPctab     = 10
	mdPclntable = 13
	mdFtab      = 16
)

// readModuledata reads and checks a moduledata candidate at addr: it must
// point at the pclntab at loc.Addr, its table slices must be where that
// pcHeader's offsets put them (so a stray word equal to the address is not
// taken for it), and its text, data and type ranges must agree with the
// image.
func readModuledata(f *elf.File, mem *ELFMem, addr uint64, loc Location, goMinor int) (*Moduledata, error) {
	var raw [mdWords * 8]byte
	if _, err := mem.ReadAt(raw[:], addr); err != nil {
		return nil, fmt.Errorf("read moduledata: %w", err)
	}
	w := func(i int) uint64 { return binary.LittleEndian.Uint64(raw[i*8:]) }
	md := &Moduledata{
		Addr: addr, PCHeader: w(mdPCHeader),
		MinPC: w(mdMinPC), MaxPC: w(mdMinPC + 1),
		Text: w(mdText), EText: w(mdText + 1),
		NoPtrData: w(mdNoPtrData), ENoPtrData: w(mdNoPtrData + 1),
		Data: w(mdNoPtrData + 2), EData: w(mdNoPtrData + 3),
		BSS: w(mdNoPtrData + 4), EBSS: w(mdNoPtrData + 5),
		NoPtrBSS: w(mdNoPtrData + 6), ENoPtrBSS: w(mdNoPtrData + 7),
	}
	if md.PCHeader != loc.Addr {
		return nil, fmt.Errorf("pcHeader %#x, pclntab at %#x", md.PCHeader, loc.Addr)
	}
	size, err := checkSlices(mem, loc.Addr, w)
	if err != nil {
		return nil, err
	}
	if loc.Size != 0 && size > loc.Size {
		return nil, fmt.Errorf("moduledata's tables end %#x past the pclntab's %#x bytes", size, loc.Size)
	}
	md.pclnSize = size
	if err := checkCommon(f, md); err != nil {
		return nil, err
	}
	if goMinor == 0 {
		// The pclntab magic at least separates 1.18–1.19 from 1.20+.
		var m [4]byte
		if _, err := mem.ReadAt(m[:], loc.Addr); err == nil && binary.LittleEndian.Uint32(m[:]) == magic118 {
			goMinor = 19
		} else {
			goMinor = -1
		}
	}
	var errs []error
	for _, l := range layoutsFor(goMinor) {
		m := *md
		m.End, m.Types, m.ETypes = w(l.end), w(l.types), w(l.etypes)
		m.Rodata, m.GoFunc, m.Layout = w(l.rodata), w(l.gofunc), l.name
		if err := checkTail(f, &m); err != nil {
			errs = append(errs, fmt.Errorf("layout %s: %w", l.name, err))
			continue
		}
		return &m, nil
	}
	return nil, errors.Join(errs...)
}

// checkSlices compares moduledata's pclntab slices (w) with the offsets in
// the pcHeader at pc and returns the bytes they span from pc.
func checkSlices(mem MemReader, pc uint64, w func(int) uint64) (uint64, error) {
	var hdr [pcHeaderSize]byte
	if _, err := mem.ReadAt(hdr[:], pc); err != nil {
		return 0, fmt.Errorf("read pcHeader at %#x: %w", pc, err)
	}
	if !isPCHeader(hdr[:8]) {
		return 0, fmt.Errorf("no pcHeader magic at %#x", pc)
	}
	h := func(i int) uint64 { return binary.LittleEndian.Uint64(hdr[8+i*8:]) }
	nfunc := h(0)
	for _, c := range []struct {
		name string
		word int
		off  uint64
	}{
		{"funcnametab", mdFuncname, h(3)}, {"cutab", mdCutab, h(4)}, {"filetab", mdFiletab, h(5)},
		{"pctab", mdPctab, h(6)}, {"pclntable", mdPclntable, h(7)}, {"ftab", mdFtab, h(7)},
	} {
		if c.off > maxPCLNTabBytes || w(c.word) != pc+c.off {
			return 0, fmt.Errorf("moduledata.%s %#x, pcHeader puts it at %#x", c.name, w(c.word), pc+c.off)
		}
	}
	if nfunc == 0 || nfunc > maxFuncs || w(mdFtab+1) != nfunc+1 {
		return 0, fmt.Errorf("moduledata.ftab has %d entries, pcHeader %d functions", w(mdFtab+1), nfunc)
	}
	n := w(mdPclntable + 1)
	if n > maxPCLNTabBytes || n < (nfunc+1)*8 {
		return 0, fmt.Errorf("moduledata.pclntable of %d bytes for %d functions", n, nfunc)
	}
	size := h(7) + n
	// The whole table must be loaded: the last byte readable.
	var last [1]byte
	if _, err := mem.ReadAt(last[:], pc+size-1); err != nil {
		return 0, fmt.Errorf("pclntab end %#x: %w", pc+size, err)
	}
	return size, nil
}

func checkCommon(f *elf.File, md *Moduledata) error {
	if md.Text == 0 || md.Text >= md.EText {
		return fmt.Errorf("text %#x..%#x", md.Text, md.EText)
	}
	if md.MinPC < md.Text || md.MaxPC > md.EText || md.MinPC > md.MaxPC {
		return fmt.Errorf("minpc/maxpc %#x..%#x outside text %#x..%#x", md.MinPC, md.MaxPC, md.Text, md.EText)
	}
	// With internal linking runtime.text is the start of .text; with
	// external linking C code may precede it, but it stays inside .text.
	if text := f.Section(".text"); text != nil {
		if md.Text < text.Addr || md.EText > text.Addr+text.Size {
			return fmt.Errorf("text %#x..%#x outside .text %#x..%#x", md.Text, md.EText, text.Addr, text.Addr+text.Size)
		}
	} else if !execAddr(f, md.Text) {
		return fmt.Errorf("text %#x not in an executable segment", md.Text)
	}
	pairs := []struct {
		name     string
		lo, hi   uint64
		sections []string
	}{
		{"noptrdata", md.NoPtrData, md.ENoPtrData, []string{".noptrdata"}},
		{"data", md.Data, md.EData, []string{".data"}},
		{"bss", md.BSS, md.EBSS, []string{".bss"}},
		{"noptrbss", md.NoPtrBSS, md.ENoPtrBSS, []string{".noptrbss"}},
	}
	for _, p := range pairs {
		if p.lo > p.hi {
			return fmt.Errorf("%s %#x..%#x", p.name, p.lo, p.hi)
		}
		// The Go linker starts each section with its Go range; external
		// linkers may put C data first, so only containment holds.
		for _, s := range p.sections {
			if sec := f.Section(s); sec != nil && (p.lo < sec.Addr || p.hi > sec.Addr+sec.Size) {
				return fmt.Errorf("%s %#x..%#x outside section %s %#x..%#x", p.name, p.lo, p.hi, s, sec.Addr, sec.Addr+sec.Size)
			}
		}
	}
	return nil
}

func checkTail(f *elf.File, md *Moduledata) error {
	if md.End < md.ENoPtrBSS {
		return fmt.Errorf("end %#x before enoptrbss %#x", md.End, md.ENoPtrBSS)
	}
	if md.Types == 0 || md.Types > md.ETypes || md.ETypes-md.Types > 1<<32 {
		return fmt.Errorf("types %#x..%#x", md.Types, md.ETypes)
	}
	if !allocAddr(f, md.Types) || !allocAddr(f, md.ETypes-1) {
		return fmt.Errorf("types %#x..%#x not in the image", md.Types, md.ETypes)
	}
	if md.Rodata > md.Types || !allocAddr(f, md.Rodata) {
		return fmt.Errorf("rodata %#x (types at %#x)", md.Rodata, md.Types)
	}
	if md.GoFunc < md.Rodata || !allocAddr(f, md.GoFunc) {
		return fmt.Errorf("gofunc %#x (rodata at %#x)", md.GoFunc, md.Rodata)
	}
	return nil
}

func allocAddr(f *elf.File, a uint64) bool {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && a >= p.Vaddr && a-p.Vaddr < p.Memsz {
			return true
		}
	}
	return false
}

func execAddr(f *elf.File, a uint64) bool {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && a >= p.Vaddr && a-p.Vaddr < p.Memsz {
			return true
		}
	}
	return false
}

// pclntabSection finds the pclntab: the .gopclntab section, or the section
// holding the runtime.pclntab symbol (external linkers may rename it).
func pclntabSection(f *elf.File) *elf.Section {
	if s := f.Section(".gopclntab"); s != nil && s.Type != elf.SHT_NOBITS {
		return s
	}
	if s := f.Section(".data.rel.ro.gopclntab"); s != nil && s.Type != elf.SHT_NOBITS {
		return s
	}
	return nil
}

// ELFMem reads a binary's static memory by virtual address from its PT_LOAD
// segments (bytes past a segment's file size read as zero, as after
// loading).
type ELFMem struct {
	progs []*elf.Prog
}

// NewELFMem wraps f's loadable segments.
func NewELFMem(f *elf.File) *ELFMem {
	m := &ELFMem{}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			m.progs = append(m.progs, p)
		}
	}
	return m
}

// ReadAt implements MemReader. The whole range must lie in one segment.
func (m *ELFMem) ReadAt(p []byte, addr uint64) (int, error) {
	for _, pr := range m.progs {
		if addr < pr.Vaddr || addr-pr.Vaddr >= pr.Memsz || uint64(len(p)) > pr.Memsz-(addr-pr.Vaddr) {
			continue
		}
		off := addr - pr.Vaddr
		n := 0
		if off < pr.Filesz {
			want := uint64(len(p))
			if want > pr.Filesz-off {
				want = pr.Filesz - off
			}
			got, err := pr.ReadAt(p[:want], int64(off))
			if uint64(got) < want {
				return got, fmt.Errorf("read %d bytes at %#x from segment: %w", len(p), addr, err)
			}
			n = got
		}
		clear(p[n:])
		return len(p), nil
	}
	return 0, fmt.Errorf("read %d bytes at %#x: not in a loadable segment", len(p), addr)
}
