package symbolizer

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Location is where a binary's pclntab lies in its image and how it was
// found.
type Location struct {
	Addr uint64 `json:"addr"` // virtual address of the pcHeader (runtime.pclntab)
	// Size is the bytes the table is read from: the section or symbol's
	// extent, or what moduledata's slices cover when it was found by scan.
	Size uint64 `json:"size"`
	// How: "section .gopclntab", "moduledata", "symbol runtime.pclntab"
	// or "scan".
	How string `json:"how"`
}

// How a pclntab was found.
const (
	FoundBySection    = "section "
	FoundByModuledata = "moduledata"
	FoundBySymbol     = "symbol runtime.pclntab"
	FoundByScan       = "scan"
)

// Bounds of the header scan for stripped externally linked binaries.
const (
	maxHeaderCandidates = 64
	pcHeaderSize        = 72 // magic..pclnOffset
	maxPCLNTabBytes     = 1 << 30
)

// Locate finds the pclntab of f however the binary was linked, and the
// moduledata pointing at it:
//
//   - the .gopclntab section (the Go linker; also external linking since
//     Go 1.26 keeps it);
//   - runtime.firstmoduledata, found by its shape in .go.module or
//     .noptrdata (where every Go version and linker puts it): its first
//     word points at the pcHeader and its table slices must agree with the
//     header's offsets. This costs the same for a 2 MB and a 100 MB binary;
//   - the runtime.pclntab and runtime.epclntab symbols (external linking
//     before 1.26 merges the table into .data.rel.ro);
//   - without any of these, a bounded scan of the loaded, non-executable
//     data for the header's magic, accepting only a candidate that a
//     moduledata points back at.
//
// md is nil (mdErr says why) when the location is known but no moduledata
// passed the checks; a table from Go 1.25 or older still opens then, since
// its header holds the text base. goMinor is the Go minor version (0:
// unknown).
func Locate(f *elf.File, goMinor int) (loc Location, md *Moduledata, mdErr, err error) {
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB {
		return loc, nil, nil, fmt.Errorf("ELF class %v %v: only 64-bit little endian: %w", f.Class, f.Data, ErrNoPCLNTab)
	}
	mem := NewELFMem(f)
	if sec := pclntabSection(f); sec != nil {
		loc = Location{Addr: sec.Addr, Size: sec.Size, How: FoundBySection + sec.Name}
		md, mdErr = findModuledata(f, mem, loc, goMinor)
		return loc, md, mdErr, nil
	}
	var errs []error
	if loc, md, err := locateByModuledata(f, mem, goMinor); err == nil {
		return loc, md, nil, nil
	} else {
		errs = append(errs, err)
	}
	if loc, md, mdErr, err := locateBySymbols(f, mem, goMinor); err == nil {
		return loc, md, mdErr, nil
	} else if !errors.Is(err, errNoSymtab) {
		errs = append(errs, err)
	}
	if loc, md, err := scanPCLNTab(f, mem, goMinor); err == nil {
		return loc, md, nil, nil
	} else {
		errs = append(errs, err)
	}
	return Location{}, nil, nil, fmt.Errorf("%w: %w", ErrNoPCLNTab, errors.Join(errs...))
}

// locateBySymbols reads the pclntab's extent from runtime.pclntab and
// runtime.epclntab.
func locateBySymbols(f *elf.File, mem *ELFMem, goMinor int) (loc Location, md *Moduledata, mdErr, err error) {
	syms, err := lookupSymbols(f, "runtime.pclntab", "runtime.epclntab")
	if err != nil {
		return loc, nil, nil, err
	}
	s, ok := syms["runtime.pclntab"]
	e, eok := syms["runtime.epclntab"]
	if !ok || !eok || e.Value <= s.Value || e.Value-s.Value > maxPCLNTabBytes {
		return loc, nil, nil, errors.New("no runtime.pclntab..runtime.epclntab symbols")
	}
	loc = Location{Addr: s.Value, Size: e.Value - s.Value, How: FoundBySymbol}
	md, mdErr = findModuledata(f, mem, loc, goMinor)
	return loc, md, mdErr, nil
}

// locateByModuledata finds runtime.firstmoduledata by its shape in the
// sections Go puts it in, and the pclntab it points at.
func locateByModuledata(f *elf.File, mem *ELFMem, goMinor int) (Location, *Moduledata, error) {
	var spans []span
	for _, s := range dataSpans(f, true) {
		if s.name == ".go.module" || s.name == ".noptrdata" {
			spans = append(spans, s)
		}
	}
	if len(spans) == 0 {
		return Location{}, nil, errors.New("no .go.module or .noptrdata section")
	}
	var md *Moduledata
	var errs []error
	buf := make([]byte, 64<<10)
	const mdBytes = mdWords * 8
	budget := uint64(maxScanBytes)
	for _, s := range spans {
		for off := uint64(0); off+mdBytes <= s.size && md == nil; {
			n := min(uint64(len(buf)), s.size-off)
			if budget < n {
				return Location{}, nil, fmt.Errorf("scanned %d bytes for moduledata: bound reached", maxScanBytes)
			}
			budget -= n
			if _, err := mem.ReadAt(buf[:n], s.addr+off); err != nil {
				return Location{}, nil, fmt.Errorf("scan %s at %#x: %w", s.name, s.addr+off, err)
			}
			for i := (8 - (s.addr+off)%8) % 8; i+mdBytes <= n && md == nil; i += 8 {
				if !moduledataShape(buf[i : i+mdBytes]) {
					continue
				}
				pc := binary.LittleEndian.Uint64(buf[i:])
				m, err := readModuledata(f, mem, s.addr+off+i, Location{Addr: pc}, goMinor)
				if err != nil {
					if len(errs) < maxHeaderCandidates {
						errs = append(errs, fmt.Errorf("candidate at %#x: %w", s.addr+off+i, err))
					}
					continue
				}
				md = m
			}
			if off+n >= s.size {
				break
			}
			off += n - mdBytes // a moduledata may straddle chunks
		}
	}
	if md == nil {
		return Location{}, nil, fmt.Errorf("no moduledata in .go.module or .noptrdata: %w", errors.Join(errs...))
	}
	return Location{Addr: md.PCHeader, Size: md.pclnSize, How: FoundByModuledata}, md, nil
}

// moduledataShape is the cheap test of a moduledata candidate: the first
// word points just below funcnametab, every table slice has len == cap,
// and ftab starts where pclntable does.
func moduledataShape(b []byte) bool {
	w := func(i int) uint64 { return binary.LittleEndian.Uint64(b[i*8:]) }
	pc, fn := w(mdPCHeader), w(mdFuncname)
	if pc == 0 || fn <= pc || fn-pc > 4096 || w(mdPclntable) != w(mdFtab) {
		return false
	}
	for _, i := range []int{mdFuncname, mdCutab, mdFiletab, mdPctab, mdPclntable, mdFtab} {
		if w(i+1) != w(i+2) {
			return false
		}
	}
	return true
}

// span is a range of the image to scan.
type span struct {
	name       string
	addr, size uint64
}

// dataSpans lists the loaded, non-executable, file-backed ranges of f: its
// allocated PROGBITS sections, or its segments when it has no section
// headers. writable selects writable ones only (where moduledata lives).
func dataSpans(f *elf.File, writable bool) []span {
	var out []span
	for _, s := range f.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_ALLOC == 0 || s.Flags&elf.SHF_EXECINSTR != 0 {
			continue
		}
		if writable && s.Flags&elf.SHF_WRITE == 0 {
			continue
		}
		out = append(out, span{s.Name, s.Addr, s.Size})
	}
	if len(f.Sections) > 1 {
		return out
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X != 0 || (writable && p.Flags&elf.PF_W == 0) {
			continue
		}
		out = append(out, span{fmt.Sprintf("segment at %#x", p.Vaddr), p.Vaddr, p.Filesz})
	}
	return out
}

// wordScan is one search of the image: 8-byte words at addresses that are
// multiples of align, found by locating pat at offset patOff inside the
// word (bytes.Index: the scan of a 40 MB binary must not cost a function
// call per word), then confirmed by match.
type wordScan struct {
	align  uint64
	pat    []byte
	patOff int
	match  func(word []byte) bool
}

// scanSpans calls hit for every word of ws in spans until hit returns
// true, reading at most *budget bytes in all.
func scanSpans(mem MemReader, spans []span, ws wordScan, budget *uint64, hit func(addr uint64) bool) (bool, error) {
	buf := make([]byte, 64<<10)
	for _, s := range spans {
		for off := uint64(0); off+8 <= s.size; {
			n := min(uint64(len(buf)), s.size-off)
			if *budget < n {
				return false, fmt.Errorf("scanned %d bytes: bound reached", maxScanBytes)
			}
			*budget -= n
			if _, err := mem.ReadAt(buf[:n], s.addr+off); err != nil {
				return false, fmt.Errorf("scan %s at %#x: %w", s.name, s.addr+off, err)
			}
			// Words at chunk offset 0 were seen at the end of the
			// previous chunk (chunks overlap by 8 bytes).
			lo := 0
			if off > 0 {
				lo = 1
			}
			for i := 0; i < int(n); {
				j := bytes.Index(buf[i:n], ws.pat)
				if j < 0 {
					break
				}
				pos := i + j - ws.patOff
				i += j + 1
				if pos < lo || pos+8 > int(n) || (s.addr+off+uint64(pos))%ws.align != 0 || !ws.match(buf[pos:pos+8]) {
					continue
				}
				if hit(s.addr + off + uint64(pos)) {
					return true, nil
				}
			}
			if off+n >= s.size {
				break
			}
			off += n - 8 // a word may straddle chunks
		}
	}
	return false, nil
}

// addrScan finds the 8-byte little-endian word a, pointer-aligned.
func addrScan(a uint64) wordScan {
	var w [8]byte
	binary.LittleEndian.PutUint64(w[:], a)
	return wordScan{align: 8, pat: w[:], match: func([]byte) bool { return true }}
}

// headerScan finds pcHeaders: the magic's three 0xff bytes and the two
// zero pads are the pattern. pcHeader is pointer-aligned; 4 keeps a
// misaligned (hostile or unusual) one findable at no cost.
var headerScan = wordScan{align: 4, pat: []byte{0xff, 0xff, 0xff, 0, 0}, patOff: 1, match: isPCHeader}

// isPCHeader matches the first 8 bytes of a Go 1.18+ pcHeader on a 64-bit
// little-endian target: magic, two zero pads, quantum (1 amd64, 4 arm64),
// pointer size 8.
func isPCHeader(b []byte) bool {
	m := binary.LittleEndian.Uint32(b)
	return (m == magic118 || m == magic120) && b[4] == 0 && b[5] == 0 && (b[6] == 1 || b[6] == 4) && b[7] == 8
}

// scanPCLNTab finds a pclntab with neither section nor symbols.
func scanPCLNTab(f *elf.File, mem *ELFMem, goMinor int) (Location, *Moduledata, error) {
	var cands []uint64
	budget := uint64(maxScanBytes)
	// External linkers put the table in .data.rel.ro: look there first.
	spans := dataSpans(f, false)
	slices.SortStableFunc(spans, func(a, b span) int {
		return cmp.Compare(spanRank(a.name), spanRank(b.name))
	})
	if _, err := scanSpans(mem, spans, headerScan, &budget, func(a uint64) bool {
		cands = append(cands, a)
		return len(cands) >= maxHeaderCandidates
	}); err != nil {
		return Location{}, nil, fmt.Errorf("scan for pclntab header: %w", err)
	}
	if len(cands) == 0 {
		return Location{}, nil, errors.New("no pclntab header in the data")
	}
	var errs []error
	for _, a := range cands {
		md, err := findModuledata(f, mem, Location{Addr: a}, goMinor)
		if err != nil {
			errs = append(errs, fmt.Errorf("header at %#x: %w", a, err))
			continue
		}
		return Location{Addr: a, Size: md.pclnSize, How: FoundByScan}, md, nil
	}
	return Location{}, nil, fmt.Errorf("%d pclntab header candidates, none with a moduledata pointing back: %w",
		len(cands), errors.Join(errs...))
}

func spanRank(name string) int {
	switch name {
	case ".data.rel.ro":
		return 0
	case ".rodata":
		return 1
	}
	return 2
}

// readerAt reads the image from a base address: the pclntab as an
// io.ReaderAt wherever it lies.
type readerAt struct {
	mem  MemReader
	base uint64
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	return r.mem.ReadAt(p, r.base+uint64(off))
}
