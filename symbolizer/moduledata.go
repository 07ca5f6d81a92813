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

// FindModuledata locates runtime.firstmoduledata in f: through .symtab when
// present, otherwise by scanning the data sections for a word equal to the
// address of .gopclntab (moduledata.pcHeader) and accepting only a
// candidate whose fields agree with the ELF sections. goMinor is the Go
// minor version from buildinfo (0 when unknown).
func FindModuledata(f *elf.File, goMinor int) (*Moduledata, error) {
	pcln := pclntabSection(f)
	if pcln == nil {
		return nil, fmt.Errorf("find moduledata: %w", ErrNoPCLNTab)
	}
	mem := NewELFMem(f)
	if syms, err := f.Symbols(); err == nil {
		for _, s := range syms {
			if s.Name == "runtime.firstmoduledata" {
				md, err := readModuledata(f, mem, s.Value, pcln, goMinor)
				if err != nil {
					return nil, fmt.Errorf("runtime.firstmoduledata at %#x: %w", s.Value, err)
				}
				return md, nil
			}
		}
	}
	return scanModuledata(f, mem, pcln, goMinor)
}

// scanModuledata finds moduledata without symbols.
func scanModuledata(f *elf.File, mem *ELFMem, pcln *elf.Section, goMinor int) (*Moduledata, error) {
	var errs []error
	// Go 1.26+ puts moduledata in its own .go.module section.
	for _, name := range []string{".go.module", ".noptrdata", ".data", ".data.rel.ro"} {
		sec := f.Section(name)
		if sec == nil || sec.Type == elf.SHT_NOBITS {
			continue
		}
		md, err := scanSection(f, mem, sec, pcln, goMinor)
		if err == nil {
			return md, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no data section to scan: %w", ErrNoModuledata)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoModuledata, errors.Join(errs...))
}

// maxScanBytes bounds the data scanned for moduledata in one section.
const maxScanBytes = 512 << 20

func scanSection(f *elf.File, mem *ELFMem, sec *elf.Section, pcln *elf.Section, goMinor int) (*Moduledata, error) {
	size := sec.Size
	if size > maxScanBytes {
		size = maxScanBytes
	}
	buf := make([]byte, 64<<10)
	var lastErr error
	for off := uint64(0); off+8 <= size; off += uint64(len(buf)) - 8 {
		n := uint64(len(buf))
		if off+n > size {
			n = size - off
		}
		got, err := sec.ReadAt(buf[:n], int64(off))
		if uint64(got) < n {
			return nil, fmt.Errorf("scan %s at %#x: %w", sec.Name, off, err)
		}
		for i := uint64(0); i+8 <= n; i += 8 {
			if binary.LittleEndian.Uint64(buf[i:]) != pcln.Addr {
				continue
			}
			md, err := readModuledata(f, mem, sec.Addr+off+i, pcln, goMinor)
			if err == nil {
				return md, nil
			}
			lastErr = err
		}
		if n < uint64(len(buf)) {
			break
		}
	}
	if lastErr != nil {
		return nil, fmt.Errorf("scan %s: %w", sec.Name, lastErr)
	}
	return nil, fmt.Errorf("scan %s: no pointer to .gopclntab at %#x", sec.Name, pcln.Addr)
}

func readModuledata(f *elf.File, mem *ELFMem, addr uint64, pcln *elf.Section, goMinor int) (*Moduledata, error) {
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
	if md.PCHeader != pcln.Addr {
		return nil, fmt.Errorf("pcHeader %#x, .gopclntab at %#x", md.PCHeader, pcln.Addr)
	}
	if fn := w(mdFuncname); fn <= pcln.Addr || fn >= pcln.Addr+pcln.Size {
		return nil, fmt.Errorf("funcnametab %#x outside .gopclntab", fn)
	}
	if err := checkCommon(f, md); err != nil {
		return nil, err
	}
	if goMinor == 0 {
		// The pclntab magic at least separates 1.18–1.19 from 1.20+.
		var m [4]byte
		if _, err := pcln.ReadAt(m[:], 0); err == nil && binary.LittleEndian.Uint32(m[:]) == magic118 {
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
		for _, s := range p.sections {
			if sec := f.Section(s); sec != nil && sec.Addr != p.lo {
				return fmt.Errorf("%s %#x, section %s at %#x", p.name, p.lo, s, sec.Addr)
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
