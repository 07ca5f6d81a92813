package hmapdecode

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
)

// shades maps a cell's mean live entries per unit (0–8+) to a character,
// lightest to darkest.
const shades = " .:-=+*#%@"

// RenderText writes a human summary of r: header, growth, statistics, a
// terminal heat map of occupancy and the anomalies.
func RenderText(w io.Writer, r *Result) error {
	if r == nil {
		return fmt.Errorf("render map: nil result")
	}
	t := &textReport{w: bufio.NewWriter(w), r: r}
	t.header()
	t.stats()
	t.heatMap()
	t.anomalies()
	t.p("read: %d bytes in %d calls, %.2f ms\n", r.Read.Bytes, r.Read.Calls, float64(r.Read.DurationNS)/1e6)
	return t.w.Flush()
}

// textReport is RenderText's output: one buffered writer whose write
// errors Flush returns at the end, so the sections below need not check
// each line.
type textReport struct {
	w *bufio.Writer
	r *Result
}

func (t *textReport) p(format string, args ...any) { fmt.Fprintf(t.w, format, args...) }

// header writes what the map is: its type, address and layout, the note,
// the runtime header of its kind, its flags and its growth state.
func (t *textReport) header() {
	r := t.r
	typ := r.GoType
	if typ == "" {
		typ = "map (type unknown)"
	}
	t.p("%s at %#x  layout=%s  %s\n", typ, r.Addr, r.Layout, r.GoVersion)
	if r.Note != "" {
		t.p("note: %s\n", r.Note)
	}
	switch {
	case r.Classic != nil:
		h := r.Classic
		t.p("hmap: count=%d B=%d (%d buckets) noverflow=%d hash0=%#x buckets=%#x oldbuckets=%#x nevacuate=%d extra=%#x\n",
			h.Count, h.B, uint64(1)<<min(h.B, 63), h.NOverflow, h.Hash0, h.Buckets, h.OldBuckets, h.NEvacuate, h.Extra)
	case r.Swiss != nil:
		h := r.Swiss
		t.p("maps.Map: used=%d dirPtr=%#x dirLen=%d globalDepth=%d globalShift=%d writing=%d clearSeq=%d small=%v\n",
			h.Used, h.DirPtr, h.DirLen, h.GlobalDepth, h.GlobalShift, h.Writing, h.ClearSeq, h.Small)
	}
	flags := "none"
	if len(r.Flags) > 0 {
		flags = strings.Join(r.Flags, ",")
	}
	t.p("flags: %s\n", flags)
	if g := r.Growth; g != nil {
		t.p("growth: growing=%v sameSize=%v old buckets=%d evacuated=%d pending=%d nevacuate=%d entries in old=%d (%d.%d%% done)\n",
			g.Growing, g.SameSize, g.OldBuckets, g.Evacuated, g.Pending, g.NEvacuate, g.EntriesInOld, g.ProgressPermil/10, g.ProgressPermil%10)
	}
}

// stats writes the counts of the walk: entries, slots, load, the
// per-unit occupancy histogram and the slot states (sorted by name, so
// the same result renders the same).
func (t *textReport) stats() {
	r := t.r
	s := r.Stats
	t.p("entries found=%d (header %d)  slots=%d  load=%.3f  tombstones=%d", s.EntriesFound, r.Count, s.Slots, s.LoadFactor, s.Tombstones)
	if r.Classic != nil {
		t.p("  buckets=%d overflow=%d max chain=%d", s.Buckets, s.Overflow, s.MaxChain)
	} else {
		t.p("  tables=%d groups=%d", s.Tables, s.Groups)
	}
	t.p("\n")
	t.p("occupancy per %s (live 0..8): %v\n", map[bool]string{true: "bucket", false: "group"}[r.Classic != nil], s.OccupancyHist)
	if len(s.SlotHist) > 0 {
		keys := make([]string, 0, len(s.SlotHist))
		for k := range s.SlotHist {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.p("slots:")
		for _, k := range keys {
			t.p(" %s=%d", k, s.SlotHist[k])
		}
		t.p("\n")
	}
}

// heatMap draws the occupancy matrix, one shade per cell from its mean
// live entries; a cell with any entry is never drawn blank.
func (t *textReport) heatMap() {
	o := t.r.Occupancy
	if len(o.Cells) == 0 || o.Cols <= 0 {
		return
	}
	t.p("heat map: %d %s, %d per cell, shades %q = 0..8 live\n", o.Units, map[bool]string{true: "bucket chains", false: "groups"}[t.r.Classic != nil], o.Span, shades)
	for row := 0; row < o.Rows; row++ {
		t.p("  |")
		for c := 0; c < o.Cols; c++ {
			i := row*o.Cols + c
			if i >= len(o.Cells) {
				t.p(" ")
				continue
			}
			k := int(o.Cells[i] / 8 * float64(len(shades)-1))
			k = max(0, min(k, len(shades)-1))
			if o.Cells[i] > 0 && k == 0 {
				k = 1
			}
			t.p("%c", shades[k])
		}
		t.p("|\n")
	}
}

// anomalies writes whether a limit cut the walk, and every anomaly with
// how often it occurred.
func (t *textReport) anomalies() {
	r := t.r
	if r.Truncated {
		t.p("TRUNCATED: a limit stopped the walk; counts are lower bounds\n")
	}
	if len(r.Anomalies) == 0 {
		t.p("anomalies: none\n")
		return
	}
	t.p("anomalies:\n")
	for _, a := range r.Anomalies {
		total := ""
		if a.Total > 1 {
			total = fmt.Sprintf(" (%d in all)", a.Total)
		}
		t.p("  %-7s %-26s %-16s %s%s\n", a.Severity, a.Code, a.Where, a.Detail, total)
	}
}
