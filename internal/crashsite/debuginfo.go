package crashsite

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
)

// DebugInfo is what a binary says about its variables: package-level
// symbols from the ELF symbol table, the data sections, and its DWARF
// (read lazily, after the release). It keeps the binary open: a crashed
// process's /proc/PID/exe is gone once it exits. Safe for concurrent use.
type DebugInfo struct {
	f  *os.File
	ef *elf.File
	// Stripped: no .symtab; nothing is named, never guessed.
	Stripped bool
	// Sections are .data and .bss (pointer-holding data) at link addresses.
	Sections []Range
	globals  []symbol // sorted by addr

	once     sync.Once
	dw       *dwarf.Data
	dwErr    error
	loc      []byte // .debug_loc (v4) or .debug_loclists (v5)
	loc5     bool
	dwGlob   map[uint64]dwVar // package-level variables by link address
	dwGlobMu sync.Mutex
	dwGlobOK bool

	// vars memoizes funcVars by pc: a storm of one binary's crashes asks
	// about the same few functions, and each answer is a walk of a
	// compile unit (SeekPC decodes the units before it too).
	varsMu sync.Mutex
	vars   map[uint64]funcVarsAnswer
}

type funcVarsAnswer struct {
	vars  []dwVar
	entry uint64
	err   error
}

// maxFuncVars bounds the memo; past it, the memo starts over.
const maxFuncVars = 4096

type symbol struct {
	name       string
	addr, size uint64
}

// Bounds on what a binary may make us read.
const (
	maxSymbols      = 4 << 20
	maxDWARFEntries = 5_000_000
)

// OpenDebugInfo reads the symbol table and section headers of the binary
// at path; DWARF waits until first used. Close releases the file.
func OpenDebugInfo(path string) (*DebugInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("parse ELF %s: %w", path, err)
	}
	d := &DebugInfo{f: f, ef: ef}
	for _, name := range []string{".data", ".bss"} {
		if s := ef.Section(name); s != nil && s.Size > 0 {
			d.Sections = append(d.Sections, Range{Addr: s.Addr, Size: s.Size})
		}
	}
	if ef.Section(".symtab") == nil {
		d.Stripped = true
		return d, nil
	}
	syms, err := ef.Symbols()
	if err != nil {
		// Unreadable symbols name nothing: as stripped, said so.
		d.Stripped = true
		return d, fmt.Errorf("read symbols of %s: %w", path, err)
	}
	if len(syms) > maxSymbols {
		syms = syms[:maxSymbols]
	}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_OBJECT || s.Size == 0 || !d.inSections(s.Value) {
			continue
		}
		d.globals = append(d.globals, symbol{name: s.Name, addr: s.Value, size: s.Size})
	}
	sort.Slice(d.globals, func(i, j int) bool { return d.globals[i].addr < d.globals[j].addr })
	return d, nil
}

// Close releases the binary.
func (d *DebugInfo) Close() error {
	if d == nil || d.f == nil {
		return nil
	}
	return d.f.Close()
}

func (d *DebugInfo) inSections(a uint64) bool {
	for _, s := range d.Sections {
		if a >= s.Addr && a < s.Addr+s.Size {
			return true
		}
	}
	return false
}

// global returns the package-level variable containing link address a.
func (d *DebugInfo) global(a uint64) (symbol, bool) {
	i := sort.Search(len(d.globals), func(i int) bool { return d.globals[i].addr+d.globals[i].size > a })
	if i < len(d.globals) && a >= d.globals[i].addr {
		return d.globals[i], true
	}
	return symbol{}, false
}

// UserGlobals are the package-level variables outside the Go runtime and
// standard library (whose pointers the copy follows), at link addresses.
func (d *DebugInfo) UserGlobals() []Range {
	var out []Range
	for _, s := range d.globals {
		if isUserSymbol(s.name) {
			out = append(out, Range{Addr: s.addr, Size: s.size})
		}
	}
	return out
}

// isUserSymbol: main, or a package path whose first element has a dot
// (a module path); the standard library's do not.
func isUserSymbol(name string) bool {
	if strings.HasPrefix(name, "main.") {
		return true
	}
	first, _, _ := strings.Cut(name, "/")
	return strings.Contains(first, ".") && strings.Contains(name, "/")
}

// DWARF returns the binary's DWARF, reading it on first use.
func (d *DebugInfo) DWARF() (*dwarf.Data, error) {
	d.once.Do(func() {
		if d.ef.Section(".debug_info") == nil && d.ef.Section(".zdebug_info") == nil {
			d.dwErr = errNoDWARF
			return
		}
		d.dw, d.dwErr = d.ef.DWARF()
		if s := d.ef.Section(".debug_loclists"); s != nil {
			d.loc, _ = s.Data()
			d.loc5 = true
		} else if s := d.ef.Section(".debug_loc"); s != nil {
			d.loc, _ = s.Data()
		}
	})
	return d.dw, d.dwErr
}

var errNoDWARF = errors.New("no DWARF")

// dwVar is a variable DWARF describes.
type dwVar struct {
	name    string
	typ     dwarf.Offset
	exprloc []byte // a single location
	loclist int64  // offset into the location lists, -1 when none
	param   bool
}

// dwGlobals indexes the package-level variables of the DWARF by address
// (bounded walk of the compile units' top level).
func (d *DebugInfo) dwGlobals() map[uint64]dwVar {
	d.dwGlobMu.Lock()
	defer d.dwGlobMu.Unlock()
	if d.dwGlobOK {
		return d.dwGlob
	}
	d.dwGlobOK = true
	dw, err := d.DWARF()
	if err != nil {
		return nil
	}
	d.dwGlob = map[uint64]dwVar{}
	r := dw.Reader()
	for n := 0; n < maxDWARFEntries; n++ {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		switch e.Tag {
		case dwarf.TagCompileUnit:
			continue // its children are the top level
		case dwarf.TagVariable:
			loc, _ := e.Val(dwarf.AttrLocation).([]byte)
			typ, _ := e.Val(dwarf.AttrType).(dwarf.Offset)
			name, _ := e.Val(dwarf.AttrName).(string)
			if len(loc) == 9 && loc[0] == opAddr && name != "" {
				a := le.Uint64(loc[1:])
				d.dwGlob[a] = dwVar{name: name, typ: typ, loclist: -1}
			}
		}
		if e.Children {
			r.SkipChildren()
		}
	}
	return d.dwGlob
}

// funcVars returns the parameters and locals of the function whose code
// holds link pc, and the function's entry (the base of its location
// lists).
func (d *DebugInfo) funcVars(pc uint64) ([]dwVar, uint64, error) {
	d.varsMu.Lock()
	a, ok := d.vars[pc]
	d.varsMu.Unlock()
	if !ok {
		a.vars, a.entry, a.err = d.readFuncVars(pc)
		d.varsMu.Lock()
		if d.vars == nil || len(d.vars) >= maxFuncVars {
			d.vars = map[uint64]funcVarsAnswer{}
		}
		d.vars[pc] = a
		d.varsMu.Unlock()
	}
	// Callers may append to or reorder what they get: their own copy.
	return append([]dwVar(nil), a.vars...), a.entry, a.err
}

func (d *DebugInfo) readFuncVars(pc uint64) ([]dwVar, uint64, error) {
	dw, err := d.DWARF()
	if err != nil {
		return nil, 0, err
	}
	r := dw.Reader()
	cu, err := r.SeekPC(pc)
	if err != nil {
		return nil, 0, fmt.Errorf("no compile unit for pc %#x: %w", pc, err)
	}
	if cu == nil || !cu.Children {
		return nil, 0, fmt.Errorf("empty compile unit for pc %#x", pc)
	}
	for n := 0; n < maxDWARFEntries; n++ {
		e, err := r.Next()
		if err != nil || e == nil || e.Tag == 0 {
			break
		}
		if e.Tag != dwarf.TagSubprogram {
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		lo, _ := e.Val(dwarf.AttrLowpc).(uint64)
		hi := highPC(e, lo)
		if pc < lo || pc >= hi || !e.Children {
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		vars := readVars(r, 0)
		return vars, lo, nil
	}
	return nil, 0, fmt.Errorf("no function for pc %#x in its compile unit", pc)
}

func highPC(e *dwarf.Entry, lo uint64) uint64 {
	switch v := e.Val(dwarf.AttrHighpc).(type) {
	case uint64:
		return v
	case int64:
		return lo + uint64(v)
	}
	return lo
}

// readVars reads the variables of a subprogram's children (lexical
// blocks included, inlined calls skipped) until the end of its children.
func readVars(r *dwarf.Reader, depth int) []dwVar {
	var out []dwVar
	for n := 0; n < 100_000; n++ {
		e, err := r.Next()
		if err != nil || e == nil || e.Tag == 0 {
			return out
		}
		switch e.Tag {
		case dwarf.TagFormalParameter, dwarf.TagVariable:
			v := dwVar{loclist: -1, param: e.Tag == dwarf.TagFormalParameter}
			v.name, _ = e.Val(dwarf.AttrName).(string)
			v.typ, _ = e.Val(dwarf.AttrType).(dwarf.Offset)
			switch l := e.Val(dwarf.AttrLocation).(type) {
			case []byte:
				v.exprloc = l
			case int64:
				v.loclist = l
			}
			if v.name != "" {
				out = append(out, v)
			}
			if e.Children {
				r.SkipChildren()
			}
		case dwarf.TagLexDwarfBlock:
			if e.Children && depth < 8 {
				out = append(out, readVars(r, depth+1)...)
			}
		default:
			if e.Children {
				r.SkipChildren()
			}
		}
	}
	return out
}
