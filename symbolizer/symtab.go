package symbolizer

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
)

// Bounds on the symbol-table search (a hostile binary may claim anything).
const (
	maxSymtabBytes = 256 << 20
	maxStrtabBytes = 512 << 20
	maxNameHits    = 16 // occurrences of one name in .strtab considered
	symChunk       = 1 << 20
)

// errNoSymtab: the binary has no symbol table (stripped).
var errNoSymtab = errors.New("no symbol table")

// lookupSymbols returns the named symbols of f's .symtab (the first
// definition of each; names not found are absent) without decoding the
// whole table: debug/elf's Symbols allocates every name of a 100 MB binary
// (~300k symbols) and is most of the cost of reading one. Two sequential,
// bounded passes instead: find the names' offsets in .strtab, then the
// 24-byte entries whose st_name is one of them.
func lookupSymbols(f *elf.File, names ...string) (map[string]elf.Symbol, error) {
	symtab, strtab, err := symbolSections(f)
	if err != nil {
		return nil, err
	}
	byOff, err := nameOffsets(strtab, names)
	if err != nil {
		return nil, err
	}
	out := make(map[string]elf.Symbol, len(names))
	if len(byOff) == 0 {
		return out, nil
	}
	if err := symbolsNamedAt(f, symtab, byOff, out, len(names)); err != nil {
		return nil, err
	}
	return out, nil
}

// symbolSections finds f's .symtab and the string table it links to, and
// checks them against the bounds before anything is read: the section
// headers are the binary's word, and a stripped binary has neither.
func symbolSections(f *elf.File) (symtab, strtab *elf.Section, err error) {
	for _, s := range f.Sections {
		if s.Type == elf.SHT_SYMTAB {
			symtab = s
			break
		}
	}
	if symtab == nil || f.Class != elf.ELFCLASS64 {
		return nil, nil, errNoSymtab
	}
	if symtab.Link == 0 || int(symtab.Link) >= len(f.Sections) {
		return nil, nil, fmt.Errorf(".symtab links to section %d of %d", symtab.Link, len(f.Sections))
	}
	strtab = f.Sections[symtab.Link]
	if strtab.Type != elf.SHT_STRTAB {
		return nil, nil, fmt.Errorf(".symtab's string table %s is %v", strtab.Name, strtab.Type)
	}
	if symtab.Size > maxSymtabBytes || strtab.Size > maxStrtabBytes {
		return nil, nil, fmt.Errorf("symbol table of %d bytes, strings %d: over the bounds", symtab.Size, strtab.Size)
	}
	return symtab, strtab, nil
}

// nameOffsets is the first pass: where each name starts in strtab
// ("\x00name\x00"), at most maxNameHits places per name. It reads
// strtab in chunks of symChunk that overlap by the longest name, so that
// a name straddling two chunks is found in the second.
func nameOffsets(strtab *elf.Section, names []string) (map[uint32]string, error) {
	byOff := map[uint32]string{}
	maxLen := 0
	for _, n := range names {
		maxLen = max(maxLen, len(n)+2)
	}
	buf := make([]byte, symChunk+maxLen)
	for off := uint64(0); off < strtab.Size; {
		n := min(uint64(len(buf)), strtab.Size-off)
		if got, err := strtab.ReadAt(buf[:n], int64(off)); uint64(got) < n {
			return nil, fmt.Errorf("read %s at %#x: %w", strtab.Name, off, err)
		}
		for _, name := range names {
			findName(buf[:n], name, uint32(off), byOff)
		}
		if off+n >= strtab.Size {
			break
		}
		off += n - uint64(maxLen) // overlap: a name may straddle chunks
	}
	return byOff, nil
}

// findName records in byOff the offset (chunk is strtab from base on) of
// each of the first maxNameHits places where name stands whole.
func findName(chunk []byte, name string, base uint32, byOff map[uint32]string) {
	pat := append(append([]byte{0}, name...), 0)
	hits := 0
	for i := 0; i+len(pat) <= len(chunk) && hits < maxNameHits; {
		j := bytes.Index(chunk[i:], pat)
		if j < 0 {
			break
		}
		byOff[base+uint32(i+j)+1] = name
		hits++
		i += j + 1
	}
}

// symbolsNamedAt is the second pass: it adds to out the first .symtab
// entry whose st_name is each offset of byOff, reading the table in
// chunks of whole 24-byte entries, and stops once all want names are
// found.
func symbolsNamedAt(f *elf.File, symtab *elf.Section, byOff map[uint32]string, out map[string]elf.Symbol, want int) error {
	const entSize = 24
	chunk := make([]byte, symChunk/entSize*entSize)
	for off := uint64(0); off+entSize <= symtab.Size; off += uint64(len(chunk)) {
		n := min(uint64(len(chunk)), symtab.Size-off) / entSize * entSize
		if got, err := symtab.ReadAt(chunk[:n], int64(off)); uint64(got) < n {
			return fmt.Errorf("read .symtab at %#x: %w", off, err)
		}
		for i := uint64(0); i < n; i += entSize {
			e := chunk[i : i+entSize]
			name, ok := byOff[f.ByteOrder.Uint32(e)]
			if !ok {
				continue
			}
			if _, dup := out[name]; dup {
				continue
			}
			out[name] = elf.Symbol{
				Name: name, Info: e[4], Other: e[5],
				Section: elf.SectionIndex(f.ByteOrder.Uint16(e[6:])),
				Value:   f.ByteOrder.Uint64(e[8:]), Size: f.ByteOrder.Uint64(e[16:]),
			}
		}
		if len(out) == want {
			break
		}
	}
	return nil
}
