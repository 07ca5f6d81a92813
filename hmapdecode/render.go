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
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	typ := r.GoType
	if typ == "" {
		typ = "map (type unknown)"
	}
	p("%s at %#x  layout=%s  %s\n", typ, r.Addr, r.Layout, r.GoVersion)
	if r.Note != "" {
		p("note: %s\n", r.Note)
	}
	switch {
	case r.Classic != nil:
		h := r.Classic
		p("hmap: count=%d B=%d (%d buckets) noverflow=%d hash0=%#x buckets=%#x oldbuckets=%#x nevacuate=%d extra=%#x\n",
			h.Count, h.B, uint64(1)<<min(h.B, 63), h.NOverflow, h.Hash0, h.Buckets, h.OldBuckets, h.NEvacuate, h.Extra)
	case r.Swiss != nil:
		h := r.Swiss
		p("maps.Map: used=%d dirPtr=%#x dirLen=%d globalDepth=%d globalShift=%d writing=%d clearSeq=%d small=%v\n",
			h.Used, h.DirPtr, h.DirLen, h.GlobalDepth, h.GlobalShift, h.Writing, h.ClearSeq, h.Small)
	}
	flags := "none"
	if len(r.Flags) > 0 {
		flags = strings.Join(r.Flags, ",")
	}
	p("flags: %s\n", flags)
	if g := r.Growth; g != nil {
		p("growth: growing=%v sameSize=%v old buckets=%d evacuated=%d pending=%d nevacuate=%d entries in old=%d (%d.%d%% done)\n",
			g.Growing, g.SameSize, g.OldBuckets, g.Evacuated, g.Pending, g.NEvacuate, g.EntriesInOld, g.ProgressPermil/10, g.ProgressPermil%10)
	}
	s := r.Stats
	p("entries found=%d (header %d)  slots=%d  load=%.3f  tombstones=%d", s.EntriesFound, r.Count, s.Slots, s.LoadFactor, s.Tombstones)
	if r.Classic != nil {
		p("  buckets=%d overflow=%d max chain=%d", s.Buckets, s.Overflow, s.MaxChain)
	} else {
		p("  tables=%d groups=%d", s.Tables, s.Groups)
	}
	p("\n")
	p("occupancy per %s (live 0..8): %v\n", map[bool]string{true: "bucket", false: "group"}[r.Classic != nil], s.OccupancyHist)
	if len(s.SlotHist) > 0 {
		keys := make([]string, 0, len(s.SlotHist))
		for k := range s.SlotHist {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		p("slots:")
		for _, k := range keys {
			p(" %s=%d", k, s.SlotHist[k])
		}
		p("\n")
	}
	if o := r.Occupancy; len(o.Cells) > 0 && o.Cols > 0 {
		p("heat map: %d %s, %d per cell, shades %q = 0..8 live\n", o.Units, map[bool]string{true: "bucket chains", false: "groups"}[r.Classic != nil], o.Span, shades)
		for row := 0; row < o.Rows; row++ {
			p("  |")
			for c := 0; c < o.Cols; c++ {
				i := row*o.Cols + c
				if i >= len(o.Cells) {
					p(" ")
					continue
				}
				k := int(o.Cells[i] / 8 * float64(len(shades)-1))
				k = max(0, min(k, len(shades)-1))
				if o.Cells[i] > 0 && k == 0 {
					k = 1
				}
				p("%c", shades[k])
			}
			p("|\n")
		}
	}
	if r.Truncated {
		p("TRUNCATED: a limit stopped the walk; counts are lower bounds\n")
	}
	if len(r.Anomalies) == 0 {
		p("anomalies: none\n")
	} else {
		p("anomalies:\n")
		for _, a := range r.Anomalies {
			total := ""
			if a.Total > 1 {
				total = fmt.Sprintf(" (%d in all)", a.Total)
			}
			p("  %-7s %-26s %-16s %s%s\n", a.Severity, a.Code, a.Where, a.Detail, total)
		}
	}
	p("read: %d bytes in %d calls, %.2f ms\n", r.Read.Bytes, r.Read.Calls, float64(r.Read.DurationNS)/1e6)
	return bw.Flush()
}
