package main

import (
	"fmt"
	"io"
	"slices"

	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// printCrashDump writes the parts of a crash report below its summary:
// the map (heat map and anomalies), the partners, and every goroutine in
// the runtime's traceback format, crashing goroutines first.
func printCrashDump(w io.Writer, cr *report.Crash) error {
	if m := cr.Map; m != nil {
		fmt.Fprintln(w, "\n--- map ---")
		if m.FoundBy != "" {
			fmt.Fprintf(w, "found by %s", m.FoundBy)
			if m.Op != "" {
				fmt.Fprintf(w, " (%s in %s)", m.Op, m.MapFunction)
			}
			fmt.Fprintln(w)
		}
		if c := m.CallSite; c != nil {
			fmt.Fprintf(w, "call site %s\n\t%s:%d\n", c.Function, c.File, c.Line)
		}
		if m.Error != "" {
			fmt.Fprintf(w, "error: %s\n", m.Error)
		}
		if m.Result != nil {
			// report.Map's own addr and type_addr shadow the embedded
			// result's in JSON, so the decoded copy lacks them.
			r := *m.Result
			r.Addr, r.TypeAddr = m.Addr, m.TypeAddr
			if err := hmapdecode.RenderText(w, &r); err != nil {
				return err
			}
		}
	}
	printHolders(w, cr.Diagnosis)
	if len(cr.Partners) > 0 || cr.PartnersNote != "" {
		fmt.Fprintln(w, "\n--- partners (other goroutines on the map, strongest evidence first) ---")
		for _, p := range cr.Partners {
			fmt.Fprintf(w, "%d. goroutine %d", p.Rank, p.Goid)
			if p.TID != 0 {
				fmt.Fprintf(w, " (thread %d)", p.TID)
			}
			fmt.Fprintf(w, " [%s]", p.Evidence)
			if p.Op != "" {
				fmt.Fprintf(w, " %s", p.Op)
			}
			if p.MapFunction != "" {
				fmt.Fprintf(w, " via %s", p.MapFunction)
			}
			fmt.Fprintln(w)
			if p.Function != "" {
				fmt.Fprintf(w, "\t%s\n\t\t%s:%d\n", p.Function, p.File, p.Line)
			}
		}
		if cr.PartnersNote != "" {
			fmt.Fprintf(w, "note: %s\n", cr.PartnersNote)
		}
	}
	if len(cr.Goroutines) > 0 {
		fmt.Fprintf(w, "\n--- goroutines (%d, crashing first) ---\n", len(cr.Goroutines))
		return symbolizer.WriteTraceback(w, crashingFirst(cr))
	}
	return nil
}

// crashingFirst orders the goroutines that hit fatal (fatal.events, in
// event order) before the others, which keep their order.
func crashingFirst(cr *report.Crash) []symbolizer.Goroutine {
	var ids []int64
	for _, e := range cr.Fatal.Events {
		if e.Goid > 0 && !slices.Contains(ids, e.Goid) {
			ids = append(ids, e.Goid)
		}
	}
	out := make([]symbolizer.Goroutine, 0, len(cr.Goroutines))
	for _, id := range ids {
		for _, g := range cr.Goroutines {
			if g.ID == id {
				out = append(out, g)
			}
		}
	}
	for _, g := range cr.Goroutines {
		if !slices.Contains(ids, g.ID) {
			out = append(out, g)
		}
	}
	return out
}
