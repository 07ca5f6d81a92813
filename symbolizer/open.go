package symbolizer

import (
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/mapsentry/mapsentry/goruntime"
)

// Open reads the pclntab of a Go ELF binary. The text base comes from the
// pclntab header when it has one (Go ≤ 1.25) and from moduledata otherwise
// (Go 1.26+); when both exist they must agree, and moduledata.text must lie
// inside .text. If the base cannot be established Open fails with
// ErrNoTextStart rather than return a table with a wrong base.
//
// f must stay open while the Table is used.
func Open(f *elf.File) (*Table, error) {
	return open(f, nil)
}

// OpenReaderAt is Open for a binary held by r.
func OpenReaderAt(r io.ReaderAt) (*Table, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	return open(f, r)
}

// OpenFile opens the binary at path; Close releases it.
func OpenFile(path string) (*Table, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f, err := elf.NewFile(fh)
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("parse ELF %s: %w", path, err)
	}
	t, err := open(f, fh)
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.closer = fh
	return t, nil
}

func open(f *elf.File, raw io.ReaderAt) (*Table, error) {
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB {
		return nil, fmt.Errorf("ELF class %v %v: only 64-bit little endian: %w", f.Class, f.Data, ErrNoPCLNTab)
	}
	sec := pclntabSection(f)
	if sec == nil {
		return nil, ErrNoPCLNTab
	}
	minor := 0
	if raw != nil {
		minor = goMinorOf(raw)
	}
	md, mdErr := FindModuledata(f, minor)
	opt := Options{Static: NewELFMem(f)}
	if mdErr == nil {
		opt.TextStart, opt.GoFunc = md.Text, md.GoFunc
	}
	t, err := NewTable(sec.Open().(io.ReaderAt), int64(sec.Size), opt)
	if err != nil {
		if errors.Is(err, ErrNoTextStart) && mdErr != nil {
			return nil, fmt.Errorf("%w: %w", err, mdErr)
		}
		return nil, err
	}
	if text := f.Section(".text"); text != nil && (t.textStart < text.Addr || t.textStart >= text.Addr+text.Size) {
		return nil, fmt.Errorf("text start %#x outside .text %#x..%#x: %w",
			t.textStart, text.Addr, text.Addr+text.Size, ErrNoTextStart)
	}
	t.md = md
	return t, nil
}

// goMinorOf reads the Go minor version from buildinfo (0 when unknown).
func goMinorOf(r io.ReaderAt) int {
	bi, err := buildinfo.Read(r)
	if err != nil {
		return 0
	}
	v, err := goruntime.ParseVersion(bi.GoVersion, "")
	if err != nil || v.Major != 1 {
		return 0
	}
	return v.Minor
}
