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

// Open reads the pclntab of a Go ELF binary, wherever it lies (Locate).
// The text base comes from the
// pclntab header when it has one (Go ≤ 1.25) and from moduledata otherwise
// (Go 1.26+); when both exist they must agree, and moduledata.text must lie
// inside .text. If the base cannot be established Open fails with
// ErrNoTextStart rather than return a table with a wrong base.
//
// f must stay open while the Table is used.
func Open(f *elf.File) (*Table, error) {
	return OpenELF(f, 0, nil)
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
	minor := 0
	if raw != nil {
		minor = goMinorOf(raw)
	}
	return OpenELF(f, minor, nil)
}

// OpenELF is Open for a parsed ELF file whose Go minor version is known
// (0: unknown): the pclntab wherever Locate finds it. The table's Close
// closes closer (the file under f), if not nil.
func OpenELF(f *elf.File, goMinor int, closer io.Closer) (*Table, error) {
	loc, md, mdErr, err := Locate(f, goMinor)
	if err != nil {
		return nil, err
	}
	mem := NewELFMem(f)
	opt := Options{Static: mem}
	if md != nil {
		opt.TextStart, opt.GoFunc = md.Text, md.GoFunc
	}
	t, err := NewTable(readerAt{mem, loc.Addr}, int64(loc.Size), opt)
	if err != nil {
		if errors.Is(err, ErrNoTextStart) && mdErr != nil {
			return nil, fmt.Errorf("%w: %w", err, mdErr)
		}
		return nil, fmt.Errorf("pclntab at %#x (%s): %w", loc.Addr, loc.How, err)
	}
	if text := f.Section(".text"); text != nil && (t.textStart < text.Addr || t.textStart >= text.Addr+text.Size) {
		return nil, fmt.Errorf("text start %#x outside .text %#x..%#x: %w",
			t.textStart, text.Addr, text.Addr+text.Size, ErrNoTextStart)
	} else if text == nil && !execAddr(f, t.textStart) {
		return nil, fmt.Errorf("text start %#x in no executable segment: %w", t.textStart, ErrNoTextStart)
	}
	t.md, t.loc, t.closer = md, loc, closer
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
