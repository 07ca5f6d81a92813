package probes

import (
	"debug/elf"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/bpf"
)

// mapOpFunc is a runtime map function the flight recorder probes: its op
// and where the map is at entry (go-runtime.md §4; amd64 register ABI).
type mapOpFunc struct {
	Name string
	Op   uint8
	Conv uint8
}

// mapOpFuncs lists every map function the flight recorder may probe. Only
// the variants a program uses are linked: a missing one is normal.
func mapOpFuncs() []mapOpFunc {
	var out []mapOpFunc
	add := func(op uint8, conv uint8, names ...string) {
		for _, n := range names {
			out = append(out, mapOpFunc{Name: "runtime." + n, Op: op, Conv: conv})
		}
	}
	// runtime.mapX(t *maptype, m *map, key...): AX=type, BX=map in every
	// version; the Swiss bodies are linknamed to these names (1.24+), and
	// mapdelete_* wrap (*Map).Delete but take (t, m, key) themselves.
	add(bpf.MapOpAssign, bpf.MapArg1, "mapassign", "mapassign_fast32", "mapassign_fast32ptr",
		"mapassign_fast64", "mapassign_fast64ptr", "mapassign_faststr")
	add(bpf.MapOpDelete, bpf.MapArg1, "mapdelete", "mapdelete_fast32", "mapdelete_fast64", "mapdelete_faststr")
	add(bpf.MapOpClear, bpf.MapArg1, "mapclear")
	add(bpf.MapOpAccess, bpf.MapArg1, "mapaccess1", "mapaccess1_fast32", "mapaccess1_fast64",
		"mapaccess1_faststr", "mapaccess1_fat", "mapaccess2", "mapaccess2_fast32", "mapaccess2_fast64",
		"mapaccess2_faststr", "mapaccess2_fat")
	// Iterator start (t, m, it): map in BX. Classic and 1.24/1.25 noswiss
	// use mapiterinit; Swiss builds call mapIterStart (mapiterinit stays
	// as a linkname shim).
	add(bpf.MapOpIterStart, bpf.MapArg1, "mapiterinit", "mapIterStart")
	// Iterator next (it): the map is at it+24 in both hiter and maps.Iter.
	add(bpf.MapOpIterNext, bpf.MapIter24, "mapiternext", "mapIterNext")
	return out
}

// MapOpProbe is one map function a map-op uprobe goes on.
type MapOpProbe struct {
	Name       string `json:"name"`
	Op         string `json:"op"`
	Entry      uint64 `json:"entry"`
	FileOffset uint64 `json:"file_offset"` // entry + placement offset, in the file
	Placement
	// Caller2: a probed map function calls this one (Go 1.27's mapaccess1_X
	// wraps mapaccess2_X), so the probe also records the caller's caller.
	Caller2 bool `json:"caller2,omitempty"`

	op, conv uint8
}

// MapOpRefusal is a map function that gets no probe, and why.
type MapOpRefusal = apitype.MapOpRefusal

// MapOpPlan is where the flight recorder's probes go in one binary.
type MapOpPlan struct {
	Probes  []MapOpProbe   `json:"probes"`
	Refused []MapOpRefusal `json:"refused,omitempty"`
}

// maxMapFunc bounds the bytes of one map function read to look for calls.
const maxMapFunc = 64 << 10

// PlanMapOps finds the map functions of the binary open as f and places a
// probe past each one's stack-check prologue. A function whose placement
// cannot be confirmed is refused, with the reason, and the rest planned.
// arm64 is not supported: every function is refused.
func (b *Binary) PlanMapOps(f *os.File) (*MapOpPlan, error) {
	if b.Table == nil {
		return nil, fmt.Errorf("%s: no symbol table", b.Path)
	}
	plan := &MapOpPlan{}
	funcs := mapOpFuncs()
	names := make([]string, len(funcs))
	for i, fn := range funcs {
		names[i] = fn.Name
	}
	found, err := b.Table.LookupFuncs(names...)
	if err != nil {
		return nil, fmt.Errorf("%s: look up map functions: %w", b.Path, err)
	}
	if b.Arch != "amd64" {
		for _, fn := range funcs {
			if _, ok := found[fn.Name]; ok {
				plan.Refused = append(plan.Refused, MapOpRefusal{Name: fn.Name,
					Reason: "map-op probes are amd64 only: placement past the arm64 prologue is not implemented"})
			}
		}
		return plan, nil
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: read ELF: %w", b.Path, err)
	}
	entries := map[uint64]int{} // entry -> index in plan.Probes
	var bodies [][]byte
	for _, fn := range funcs {
		sym, ok := found[fn.Name]
		if !ok {
			continue
		}
		refuse := func(why string) { plan.Refused = append(plan.Refused, MapOpRefusal{Name: fn.Name, Reason: why}) }
		off, err := fileOffset(ef, sym.Entry)
		if err != nil {
			refuse(err.Error())
			continue
		}
		if err := checkEntry(f, off, b.Arch); err != nil {
			refuse("entry not confirmed: " + err.Error())
			continue
		}
		size := sym.End - sym.Entry
		if sym.End <= sym.Entry || size > maxMapFunc {
			refuse(fmt.Sprintf("implausible function size %d", int64(size)))
			continue
		}
		code := make([]byte, size)
		if _, err := f.ReadAt(code, int64(off)); err != nil {
			refuse(fmt.Sprintf("read code: %v", err))
			continue
		}
		pl, err := placeAfterPrologue(code)
		if err != nil {
			refuse(err.Error())
			continue
		}
		entries[sym.Entry] = len(plan.Probes)
		bodies = append(bodies, code)
		plan.Probes = append(plan.Probes, MapOpProbe{
			Name: fn.Name, Op: bpf.OpName(uint32(fn.Op)), Entry: sym.Entry,
			FileOffset: off + pl.Offset, Placement: pl, op: fn.Op, conv: fn.Conv,
		})
	}
	// A probed function called by another probed function records that
	// function as its caller; it records the user caller as caller2.
	for i := range plan.Probes {
		for _, target := range directCalls(bodies[i], plan.Probes[i].Entry) {
			if j, ok := entries[target]; ok && j != i {
				plan.Probes[j].Caller2 = true
			}
		}
	}
	return plan, nil
}

// cookie is the map-op cookie of probe p in binary id.
func (p *MapOpProbe) cookie(id uint32) uint64 {
	conv := p.conv
	if p.Caller2 {
		conv |= bpf.Caller2
	}
	return bpf.MapOpCookie(id, conv, p.op)
}

// ProbeNames lists the plan's probes as NAME+OFFSET(AT).
func (p *MapOpPlan) ProbeNames() []string {
	out := make([]string, 0, len(p.Probes))
	for _, pr := range p.Probes {
		out = append(out, fmt.Sprintf("%s+%d(%s)", pr.Name, pr.Offset, strings.ReplaceAll(pr.At, " ", "")))
	}
	sort.Strings(out)
	return out
}
