package symbolizer

import (
	"bytes"
	"debug/elf"
	"debug/gosym"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// linkVariants are the ways distributions and users link Go programs:
// external linking with cgo (gcc), PIE, -trimpath, stripped and not.
func linkVariants() []variant {
	var out []variant
	for _, tc := range testenv.Toolchains() {
		out = append(out,
			variant{toolchain: tc, link: "external"},
			variant{toolchain: tc, link: "external", stripped: true},
			variant{toolchain: tc, link: "extpie", stripped: true},
			variant{toolchain: tc, link: "pie", trimpath: true, stripped: true},
		)
	}
	return out
}

// TestLocateLinkModes finds the pclntab of every link mode and checks the
// table against debug/gosym reading the same bytes: every function's name
// and range, and the crash functions by name.
func TestLocateLinkModes(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		testenv.Unavailable(t, "external linking needs gcc (make deps installs it)")
	}
	for _, v := range linkVariants() {
		t.Run(v.String(), func(t *testing.T) {
			path := victim(t, v)
			tab, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer tab.Close()
			loc := tab.Location()
			t.Logf("pclntab at %#x, %d bytes, by %s; text %#x; moduledata %+v", loc.Addr, loc.Size, loc.How, tab.TextStart(), tab.Moduledata())
			checkAgainstGosym(t, path, tab)
		})
	}
}

// checkAgainstGosym compares tab with debug/gosym over the bytes at tab's
// location.
func checkAgainstGosym(t *testing.T, path string, tab *Table) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	loc := tab.Location()
	data := make([]byte, loc.Size)
	if _, err := NewELFMem(f).ReadAt(data, loc.Addr); err != nil {
		t.Fatal(err)
	}
	gt, err := gosym.NewTable(nil, gosym.NewLineTable(data, tab.TextStart()))
	if err != nil {
		t.Fatal(err)
	}
	if len(gt.Funcs) != tab.NumFuncs() {
		t.Fatalf("%d functions, gosym %d", tab.NumFuncs(), len(gt.Funcs))
	}
	for i := 0; i < len(gt.Funcs); i += 1 + len(gt.Funcs)/2000 {
		gf := gt.Funcs[i]
		fn, ok := tab.FuncForPC(gf.Entry)
		if !ok || fn.Name != gf.Name || fn.Entry != gf.Entry || fn.End != gf.End {
			t.Fatalf("pc %#x: %+v, gosym %s %#x..%#x", gf.Entry, fn, gf.Name, gf.Entry, gf.End)
		}
	}
	names := []string{"runtime.fatal", "runtime.throw", "runtime.fatalpanic"}
	got, err := tab.LookupFuncs(names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		g := gt.LookupFunc(n)
		if g == nil || got[n].Entry != g.Entry {
			t.Errorf("%s: %#x, gosym %v", n, got[n].Entry, g)
		}
	}
	text := f.Section(".text")
	if tab.TextStart() < text.Addr || tab.TextStart() >= text.Addr+text.Size {
		t.Errorf("text start %#x outside .text", tab.TextStart())
	}
}

// TestLocateDocker reads a real externally linked third-party binary (the
// docker CLI: cgo, gcc, pclntab merged into .data.rel.ro, no .gopclntab),
// by symbols, and a stripped copy of it by the header scan: the same table.
func TestLocateDocker(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		testenv.Unavailable(t, "no docker CLI on this machine: no externally linked third-party Go binary to read")
	}
	tab, err := OpenFile(docker)
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	loc := tab.Location()
	t.Logf("%s: pclntab at %#x, %d bytes, by %s; %d functions", docker, loc.Addr, loc.Size, loc.How, tab.NumFuncs())
	checkAgainstGosym(t, docker, tab)

	stripped := filepath.Join(t.TempDir(), "docker-stripped")
	if out, err := exec.Command("objcopy", "--strip-all", docker, stripped).CombinedOutput(); err != nil {
		t.Fatalf("objcopy --strip-all: %v\n%s", err, out)
	}
	sf, err := elf.Open(stripped)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if _, err := lookupSymbols(sf, "runtime.pclntab"); err == nil {
		t.Fatal("stripped copy still has a symbol table")
	}
	st, err := OpenFile(stripped)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if sloc := st.Location(); sloc != loc || st.TextStart() != tab.TextStart() || *st.Moduledata() != *tab.Moduledata() {
		t.Fatalf("stripped: %+v text %#x md %+v; unstripped %+v text %#x md %+v",
			sloc, st.TextStart(), st.Moduledata(), loc, tab.TextStart(), tab.Moduledata())
	}
	checkAgainstGosym(t, stripped, st)

	// Every way of finding it agrees: symbols (unstripped), the header
	// scan (stripped), moduledata's shape (both).
	f, err := elf.Open(docker)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	symLoc, symMD, _, err := locateBySymbols(f, NewELFMem(f), 0)
	if err != nil {
		t.Fatal(err)
	}
	scanLoc, scanMD, err := scanPCLNTab(sf, NewELFMem(sf), 0)
	if err != nil {
		t.Fatal(err)
	}
	if symLoc.Addr != loc.Addr || scanLoc.Addr != loc.Addr || scanLoc.Size != loc.Size || symLoc.Size < loc.Size ||
		*symMD != *tab.Moduledata() || *scanMD != *tab.Moduledata() {
		t.Fatalf("by symbols %+v, by header scan %+v, by %s %+v", symLoc, scanLoc, loc.How, loc)
	}
	t.Logf("found by %s; symbols and the header scan agree", loc.How)
}

// sectionless returns a copy of the ELF image b with its section headers
// dropped (as sstrip does): only segments are left to find things in.
func sectionless(t testing.TB, b []byte) []byte {
	t.Helper()
	c := append([]byte(nil), b...)
	if len(c) < 64 || string(c[:4]) != "\x7fELF" {
		t.Fatal("not ELF")
	}
	// e_shoff (8 bytes at 0x28), e_shnum (2 at 0x3c), e_shstrndx (2 at 0x3e).
	clear(c[0x28:0x30])
	clear(c[0x3c:0x40])
	return c
}

// TestLocateSectionless finds the pclntab of an externally linked,
// stripped binary with no section headers at all, by the scan over its
// segments.
func TestLocateSectionless(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		testenv.Unavailable(t, "external linking needs gcc (make deps installs it)")
	}
	for _, v := range []variant{{toolchain: "go1.19", link: "external", stripped: true}, {toolchain: "go1.27", link: "extpie", stripped: true}} {
		t.Run(v.String(), func(t *testing.T) {
			path := victim(t, v)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()
			tab, err := OpenReaderAt(bytes.NewReader(sectionless(t, b)))
			if err != nil {
				t.Fatal(err)
			}
			if loc := tab.Location(); loc.How != FoundByScan || loc.Addr != want.Location().Addr || tab.TextStart() != want.TextStart() {
				t.Fatalf("section-less: %+v text %#x; with sections %+v text %#x", loc, tab.TextStart(), want.Location(), want.TextStart())
			}
			for _, n := range []string{"runtime.fatal", "runtime.throw"} {
				a, _ := want.LookupFunc(n)
				b, ok := tab.LookupFunc(n)
				if !ok || a.Entry != b.Entry {
					t.Errorf("%s: %#x, with sections %#x", n, b.Entry, a.Entry)
				}
			}
		})
	}
}

// FuzzLocate patches the pclntab header, the moduledata and the data
// around them in a section-less, stripped, externally linked binary (the
// path that trusts the least) and opens it: errors are fine, panics and
// unbounded work are not.
func FuzzLocate(f *testing.F) {
	path := victim(f, variant{toolchain: "go1.26", link: "external", stripped: true})
	good, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	tab, err := OpenFile(path)
	if err != nil {
		f.Fatal(err)
	}
	ef, err := elf.Open(path)
	if err != nil {
		f.Fatal(err)
	}
	fileOff := func(va uint64) uint64 {
		for _, p := range ef.Progs {
			if p.Type == elf.PT_LOAD && va >= p.Vaddr && va < p.Vaddr+p.Filesz {
				return va - p.Vaddr + p.Off
			}
		}
		f.Fatalf("%#x not in the file", va)
		return 0
	}
	targets := []uint64{fileOff(tab.Location().Addr), fileOff(tab.Moduledata().Addr), 0}
	tab.Close()
	ef.Close()
	base := sectionless(f, good)
	f.Add(uint8(0), uint32(0), []byte{0xf1, 0xff, 0xff, 0xff})
	f.Add(uint8(1), uint32(8), []byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint8(0), uint32(8), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add(uint8(1), uint32(13*8+8), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(2), uint32(0x30), []byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, which uint8, off uint32, patch []byte) {
		b := append([]byte(nil), base...)
		at := targets[int(which)%len(targets)] + uint64(off%4096)
		if at < uint64(len(b)) {
			copy(b[at:], patch)
		}
		tab, err := OpenReaderAt(bytes.NewReader(b))
		if err != nil {
			return
		}
		ts := tab.TextStart()
		for pc := ts; pc < ts+0x4000; pc += 97 {
			tab.PCToFrames(pc)
		}
		tab.LookupFuncs("runtime.fatal", "runtime.throw")
	})
}
