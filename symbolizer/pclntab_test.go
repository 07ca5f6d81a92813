package symbolizer

import (
	"debug/elf"
	"debug/gosym"
	"strings"
	"testing"
)

// TestOpenVictims checks every function of every victim build against
// debug/gosym (physical function, innermost file:line) and checks that the
// names the probes need resolve, stripped or not.
func TestOpenVictims(t *testing.T) {
	for _, v := range allVariants() {
		t.Run(v.String(), func(t *testing.T) {
			path := victim(t, v)
			tab, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer tab.Close()
			f, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			text := f.Section(".text")
			if tab.TextStart() != text.Addr {
				t.Errorf("text start %#x, .text at %#x", tab.TextStart(), text.Addr)
			}
			md := tab.Moduledata()
			if md == nil {
				t.Fatal("no moduledata")
			}
			t.Logf("moduledata at %#x layout %s types %#x..%#x gofunc %#x", md.Addr, md.Layout, md.Types, md.ETypes, md.GoFunc)
			data, err := f.Section(".gopclntab").Data()
			if err != nil {
				t.Fatal(err)
			}
			gt, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
			if err != nil {
				t.Fatal(err)
			}
			if len(gt.Funcs) != tab.NumFuncs() {
				t.Errorf("%d functions, gosym has %d", tab.NumFuncs(), len(gt.Funcs))
			}
			checked, inl := 0, 0
			for _, gf := range gt.Funcs {
				for pc := gf.Entry; pc < gf.End; pc += 1 + (gf.End-gf.Entry)/7 {
					fr := tab.PCToFrames(pc)
					if len(fr) == 0 {
						t.Fatalf("pc %#x (%s): no frames", pc, gf.Name)
					}
					if got := fr[len(fr)-1].Function; got != gf.Name {
						t.Fatalf("pc %#x: function %q, gosym %q", pc, got, gf.Name)
					}
					file, line, _ := gt.PCToLine(pc)
					if line <= 0 {
						line, file = 0, "?" // no line table (assembly stubs)
					}
					if fr[0].File != file || fr[0].Line != line {
						t.Fatalf("pc %#x (%s): %s:%d, gosym %s:%d", pc, gf.Name, fr[0].File, fr[0].Line, file, line)
					}
					checked++
					if len(fr) > 1 {
						inl++
					}
				}
			}
			if inl == 0 {
				t.Error("no inlined frames found anywhere")
			}
			t.Logf("%d pcs checked, %d with inlined frames", checked, inl)
			want := []string{"runtime.fatal", "runtime.throw", "runtime.mapassign_fast64", "main.chanRecvInl", "runtime.forEachG"}
			got, err := tab.LookupFuncs(want...)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range want {
				g := gt.LookupFunc(n)
				if g == nil {
					continue
				}
				if got[n].Entry != g.Entry || got[n].End != g.End {
					t.Errorf("%s: %#x..%#x, gosym %#x..%#x", n, got[n].Entry, got[n].End, g.Entry, g.End)
				}
			}
			if fn, ok := tab.LookupFunc("main.chanRecvInl"); !ok {
				t.Error("main.chanRecvInl not found")
			} else if !strings.HasSuffix(fn.Name, "chanRecvInl") {
				t.Errorf("lookup returned %q", fn.Name)
			}
		})
	}
}

// TestModuledataScan checks that the symbol-less search finds the same
// moduledata as .symtab's runtime.firstmoduledata, for every version.
func TestModuledataScan(t *testing.T) {
	for _, tc := range []string{"go1.19", "go1.26", "go1.27"} {
		t.Run(tc, func(t *testing.T) {
			f, err := elf.Open(victim(t, variant{toolchain: tc}))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			loc, _, _, err := Locate(f, 0)
			if err != nil {
				t.Fatal(err)
			}
			sym, err := lookupSymbols(f, "runtime.firstmoduledata")
			if err != nil {
				t.Fatal(err)
			}
			mem := NewELFMem(f)
			bySym, err := readModuledata(f, mem, sym["runtime.firstmoduledata"].Value, loc, 0)
			if err != nil {
				t.Fatal(err)
			}
			byScan, err := findModuledata(f, mem, loc, 0)
			if err != nil {
				t.Fatal(err)
			}
			if *bySym != *byScan {
				t.Fatalf("symtab %+v\nscan %+v", bySym, byScan)
			}
			// The header scan (stripped external linking) finds the same
			// table and moduledata as the section.
			hloc, hmd, err := scanPCLNTab(f, mem, 0)
			if err != nil {
				t.Fatal(err)
			}
			if hloc.Addr != loc.Addr || hloc.How != FoundByScan || *hmd != *bySym {
				t.Fatalf("header scan: %+v %+v, section %+v %+v", hloc, hmd, loc, bySym)
			}
			syms, _ := f.Symbols()
			want := map[string]uint64{}
			for _, s := range syms {
				want[s.Name] = s.Value
			}
			if bySym.Types != want["runtime.types"] || bySym.ETypes != want["runtime.etypes"] || bySym.Text != want["runtime.text"] {
				t.Errorf("types %#x..%#x text %#x; symbols say %#x..%#x %#x", bySym.Types, bySym.ETypes, bySym.Text,
					want["runtime.types"], want["runtime.etypes"], want["runtime.text"])
			}
			if g, ok := want["go:func.*"]; ok && g != bySym.GoFunc {
				t.Errorf("gofunc %#x, symbol go:func.* %#x", bySym.GoFunc, g)
			}
		})
	}
}
