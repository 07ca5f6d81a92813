package probes

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// ErrNotGo marks an executable that is not a Go program (no buildinfo).
// It is the common case on a host and not a failure.
var ErrNotGo = errors.New("not a Go binary")

// Func is a probe target inside a binary.
type Func struct {
	Name       string `json:"name"`
	Addr       uint64 `json:"addr"`        // virtual address of the entry
	FileOffset uint64 `json:"file_offset"` // what a uprobe attaches to
}

// crashFunc is a runtime function through which fatal errors pass, with
// the probe kind the BPF side reports for it and the first Go minor
// version that has it.
type crashFunc struct {
	Name     string
	Kind     uint8
	MinMinor int
}

// crashFuncs lists every function probed for crashes.
func crashFuncs() []crashFunc {
	return []crashFunc{
		{"runtime.fatal", 1, 19},               // map errors since 1.19, deadlock, ...
		{"runtime.throw", 2, 0},                // runtime-internal fatal errors
		{"internal/runtime/maps.fatal", 3, 24}, // Swiss maps (1.24+)
		{"runtime.fatalpanic", 4, 0},           // unrecovered panics
	}
}

// crashFuncsFor lists the crash functions a Go 1.minor binary has: a
// name looked for and absent costs a pass over the whole function table.
func crashFuncsFor(minor int) []crashFunc {
	var out []crashFunc
	for _, cf := range crashFuncs() {
		if minor >= cf.MinMinor {
			out = append(out, cf)
		}
	}
	return out
}

// Binary is what probes learned about one Go executable.
type Binary struct {
	Key FileKey `json:"key"`
	// Gen is the file's contents generation when inspected: a file
	// rewritten in place keeps its inode, and probes at its old offsets
	// would land mid-instruction in the new code.
	Gen       FileGen           `json:"gen"`
	Path      string            `json:"path"`
	GoVersion string            `json:"go_version"`
	Arch      string            `json:"arch"`
	Layout    *goruntime.Layout `json:"-"`
	MapLayout string            `json:"map_layout"`
	Stripped  bool              `json:"stripped"`
	HasDWARF  bool              `json:"has_dwarf"`
	BuildID   string            `json:"build_id,omitempty"`
	Funcs     []Func            `json:"funcs"`
	// PIE binaries load at a random base: runtime addresses are link
	// addresses plus a per-process bias (procmem.LoadBias with Entry).
	PIE   bool   `json:"pie,omitempty"`
	Entry uint64 `json:"-"`
	// TypesBase is moduledata.types: type names in the binary's type
	// descriptors are offsets from it. 0 when moduledata was not found.
	TypesBase uint64 `json:"types_base,omitempty"`
	// Allgs is the address of runtime.allgs, 0 when not found (AllgsErr).
	Allgs    uint64 `json:"allgs,omitempty"`
	AllgsErr string `json:"allgs_error,omitempty"`
	// ExternalLink and Cgo are what buildinfo says of the build.
	ExternalLink bool `json:"external_link,omitempty"`
	Cgo          bool `json:"cgo,omitempty"`
	// PCLNTab is where the function table was found (section, symbol or
	// scan: externally linked binaries differ).
	PCLNTab symbolizer.Location `json:"pclntab"`
	// Table symbolizes PCs; it holds the binary open until Close.
	Table *symbolizer.Table `json:"-"`
	// file is the binary, open: read through Table, and fstat'ed to see
	// it rewritten or deleted.
	file *os.File
	// probeKinds[i] is the probe kind of Funcs[i].
	probeKinds []uint8
}

// Close releases the binary's symbol table and file.
func (b *Binary) Close() error {
	if b == nil || b.Table == nil {
		return nil
	}
	return b.Table.Close()
}

// fdPath names b's open file: /proc/self/fd/N reaches the inode wherever
// it is, deleted or in another mount namespace.
func (b *Binary) fdPath() string {
	if b.file == nil {
		return b.Path
	}
	return "/proc/self/fd/" + strconv.Itoa(int(b.file.Fd()))
}

// current reports whether the file b was read from is still the same
// contents (not rewritten in place) and still linked somewhere.
func (b *Binary) current() (sameGen, linked bool) {
	if b.file == nil {
		return false, false
	}
	st, err := b.file.Stat()
	if err != nil {
		return false, false
	}
	_, gen, ok := fileIdentity(st)
	sys, _ := st.Sys().(*syscall.Stat_t)
	return ok && gen == b.Gen, sys != nil && sys.Nlink > 0
}

// Inspect reads the Go facts of the executable at path (typically
// /proc/PID/exe, which works across mount namespaces and for deleted files).
func Inspect(path string) (*Binary, error) { return inspect(path, true) }

// inspect is Inspect, with the binary's DWARF applied to the layout or
// not: discovery attaches first with the built-in tables (the same values
// for every supported version, tested against DWARF) and applies the
// DWARF after, since decompressing and walking it is most of the time
// before a new binary's crash probes are in (~300 ms of ~350 for a 30 MB
// binary), and a program may crash that early.
//
// The rest is built to cost the same for a 2 MB and a 100 MB binary: the
// ELF headers, buildinfo, the pclntab header and moduledata (located
// without reading the symbol table), and one pass over the function
// table that stops as soon as the crash functions and runtime.forEachG
// (for runtime.allgs) are found — they are among the first functions, in
// the runtime package the linker lays out first.
func inspect(path string, withDWARF bool) (*Binary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	key, gen, ok := fileIdentity(st)
	if !ok {
		return nil, fmt.Errorf("stat %s: no inode", path)
	}
	b := &Binary{Key: key, Gen: gen, Path: path}

	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: not ELF: %v", path, ErrNotGo, err)
	}
	bi, err := buildinfo.Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrNotGo, err)
	}
	goexp := b.readBuildInfo(bi)
	b.readELF(ef)
	v, err := goruntime.ParseVersion(bi.GoVersion, goexp)
	if err != nil {
		return b, err
	}
	if err := b.setLayout(ef, v, withDWARF); err != nil {
		return b, err
	}
	// The symbolizer takes Go 1.26+'s text base from moduledata, checked
	// against .text, and refuses rather than guess. The table reads
	// through f from now on and closes it.
	tab, err := symbolizer.OpenELF(ef, v.Minor, f)
	if err != nil {
		return b, fmt.Errorf("%s: find pclntab: %w", path, err)
	}
	keep = true
	b.Table, b.file = tab, f
	b.PCLNTab = tab.Location()
	if md := tab.Moduledata(); md != nil {
		b.TypesBase = md.Types
	}
	if err := b.resolveFuncs(ef, f); err != nil {
		return b, err
	}
	return b, nil
}

// readBuildInfo takes what the Go toolchain recorded of the build: the
// version, the architecture and cgo. It returns the GOEXPERIMENT setting:
// an experiment can change the map layout (noswissmap, mapsplitgroup).
func (b *Binary) readBuildInfo(bi *buildinfo.BuildInfo) (goexp string) {
	b.GoVersion = bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOEXPERIMENT":
			goexp = s.Value
		case "GOARCH":
			b.Arch = s.Value
		case "CGO_ENABLED":
			b.Cgo = s.Value == "1"
		}
	}
	return goexp
}

// readELF takes what the ELF headers say of the binary: the architecture
// when buildinfo did not, whether it is stripped, linked externally or
// position independent, whether it has DWARF, and its Go build id.
func (b *Binary) readELF(ef *elf.File) {
	if b.Arch == "" {
		b.Arch = elfArch(ef.Machine)
	}
	b.Stripped = ef.Section(".symtab") == nil
	// Only the C toolchain's start files bring .init (cgo builds are
	// often linked externally without -linkmode saying so).
	b.ExternalLink = ef.Section(".init") != nil
	b.PIE, b.Entry = ef.Type == elf.ET_DYN, ef.Entry
	b.HasDWARF = ef.Section(".debug_info") != nil
	b.BuildID = goBuildID(ef)
}

// setLayout picks the runtime layout table of Go version v, with the
// binary's DWARF applied when asked (see inspect for why not always).
func (b *Binary) setLayout(ef *elf.File, v goruntime.Version, withDWARF bool) error {
	var err error
	if b.Layout, err = goruntime.ForVersion(v, b.Arch); err != nil {
		return err
	}
	b.MapLayout = string(b.Layout.Maps)
	if b.HasDWARF && withDWARF {
		applyDWARF(ef, b.Layout)
	}
	return nil
}

// applyDWARF makes the binary's DWARF the authority over l; a failure
// leaves the tables in place.
func applyDWARF(ef *elf.File, l *goruntime.Layout) {
	d, err := ef.DWARF()
	if err != nil {
		return
	}
	_ = l.ApplyDWARF(d)
	// The map header and map type offsets too (hmapdecode and crashsite
	// read them); what changed is only of interest to the goruntime tests,
	// which compare tables and DWARF.
	_, _ = l.ApplyMapsDWARF(d)
	// The heap layout that finds a map's allocation site: DWARF only, nil
	// (with l.HeapNote saying why) when the binary's DWARF lacks a piece.
	_ = l.ApplyHeapDWARF(d)
}

// dwarfLayout returns a copy of b's layout with the DWARF of the binary at
// path applied; b is not changed (captures may be reading it).
func (b *Binary) dwarfLayout(path string) (*goruntime.Layout, error) {
	if b.Layout == nil {
		return nil, errors.New("no layout")
	}
	ef, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer ef.Close()
	l := *b.Layout
	applyDWARF(ef, &l)
	return &l, nil
}

func elfArch(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_AARCH64:
		return "arm64"
	}
	return m.String()
}

// goBuildID returns the Go build id from the .note.go.buildid note.
func goBuildID(ef *elf.File) string {
	s := ef.Section(".note.go.buildid")
	if s == nil || s.Size > 4096 {
		return ""
	}
	data, err := s.Data()
	if err != nil || len(data) < 16 {
		return ""
	}
	// Note: namesz(4) descsz(4) type(4) "Go\0\0" desc.
	descsz := int(ef.ByteOrder.Uint32(data[4:8]))
	if 16+descsz > len(data) {
		return ""
	}
	return string(bytes.TrimRight(data[16:16+descsz], "\x00"))
}

// resolveFuncs finds the crash functions in the pclntab and converts their
// entries to file offsets, refusing any it cannot confirm.
func (b *Binary) resolveFuncs(ef *elf.File, f *os.File) error {
	names := make([]string, 0, 5)
	want := crashFuncsFor(b.Layout.Version.Minor)
	for _, cf := range want {
		names = append(names, cf.Name)
	}
	names = append(names, "runtime.forEachG")
	found, err := b.Table.LookupFuncs(names...)
	if err != nil {
		return fmt.Errorf("%s: look up crash functions: %w", b.Path, err)
	}
	if fn, ok := found["runtime.forEachG"]; ok && b.Arch == "amd64" {
		b.Allgs, err = symbolizer.AllgsFromForEachG(ef, fn)
	} else {
		b.Allgs, err = symbolizer.FindAllgs(ef, b.Table)
	}
	if err != nil {
		b.AllgsErr = err.Error()
	}
	for _, cf := range want {
		fn, ok := found[cf.Name]
		if !ok {
			continue // dead-code elimination or older Go: normal
		}
		off, err := fileOffset(ef, fn.Entry)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", b.Path, cf.Name, err)
		}
		if err := checkEntry(f, off, b.Arch); err != nil {
			return fmt.Errorf("%s: %s at %#x (file offset %#x): refusing to attach: %w", b.Path, cf.Name, fn.Entry, off, err)
		}
		b.Funcs = append(b.Funcs, Func{Name: cf.Name, Addr: fn.Entry, FileOffset: off})
		b.probeKinds = append(b.probeKinds, cf.Kind)
	}
	if len(b.Funcs) == 0 {
		return fmt.Errorf("%s: none of the crash functions found in the pclntab", b.Path)
	}
	return nil
}

// FuncName returns the function containing pc, or "".
func (b *Binary) FuncName(pc uint64) string {
	if b.Table == nil {
		return ""
	}
	if fn, ok := b.Table.FuncForPC(pc); ok {
		return fn.Name
	}
	return ""
}

// fileOffset converts a virtual address to an offset in the file through
// the executable PT_LOAD segment that maps it.
func fileOffset(ef *elf.File, va uint64) (uint64, error) {
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 {
			continue
		}
		if va >= p.Vaddr && va < p.Vaddr+p.Filesz {
			return va - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("address %#x is in no executable segment", va)
}

// checkEntry confirms that off is the start of a Go function: the preceding
// byte is the linker's INT3 padding (amd64) and the first instruction is one
// Go's prologues begin with. A wrong text base would put the probe in the
// middle of an instruction, which the kernel accepts silently.
func checkEntry(f *os.File, off uint64, arch string) error {
	if arch != "amd64" {
		return nil // arm64 instructions are fixed width and 4-aligned
	}
	var buf [5]byte
	if off == 0 {
		return errors.New("entry at file offset 0")
	}
	if _, err := f.ReadAt(buf[:], int64(off-1)); err != nil {
		return fmt.Errorf("read entry bytes: %w", err)
	}
	if buf[0] != 0xcc && buf[0] != 0xc3 {
		return fmt.Errorf("byte before entry is %#02x, not padding", buf[0])
	}
	code := buf[1:]
	switch {
	case code[0] == 0x55: // PUSH RBP (nosplit functions)
	case code[0] == 0x49 && code[1] == 0x3b && code[2] == 0x66: // CMP RSP, 0x10(R14)
	case code[0] == 0x4c && code[1] == 0x8d: // LEA R12, -x(RSP): big frames
	case code[0] == 0x48 && (code[1] == 0x83 || code[1] == 0x81) && code[2] == 0xec: // SUB RSP, x
	default:
		return fmt.Errorf("first bytes % x are not a Go prologue", code[:4])
	}
	return nil
}
