package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mapsentry/mapsentry/internal/pprofdump"
	"github.com/mapsentry/mapsentry/report"
)

// printDiagnosis writes the report's diagnosis, which `show` prints first:
// the sentence, the evidence behind it, the variable and its source, the
// signature.
func printDiagnosis(out io.Writer, cr *report.Crash) error {
	d := cr.Diagnosis
	if d == nil {
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if d.Sentence != "" {
		fmt.Fprintf(w, "diagnosis\t%s\n", d.Sentence)
		ev := d.Strength
		if d.Evidence != "" {
			ev += " (" + d.Evidence + ")"
		}
		fmt.Fprintf(w, "evidence\t%s\n", ev)
	}
	if v := d.Variable; v != nil {
		name := v.Name
		if name == "" {
			name = "not found"
		}
		if v.Function != "" {
			name += " in " + v.Function
		}
		fmt.Fprintf(w, "variable\t%s [%s]\n", name, v.Source)
		switch {
		case v.AllocSite != nil:
			fmt.Fprintf(w, "allocated at\t%s\n", v.AllocSite.At())
		case v.AllocNote != "":
			fmt.Fprintf(w, "allocated at\t%s\n", v.AllocNote)
		}
	}
	if d.SyncMap != "" {
		fmt.Fprintf(w, "sync.Map\t%s stores the map as a value\n", d.SyncMap)
	}
	fmt.Fprintf(w, "signature\t%s\n", d.Signature)
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(out)
	return err
}

// printHolders writes who holds the map, writers first.
func printHolders(w io.Writer, d *report.Diagnosis) {
	if d == nil || (len(d.Holders) == 0 && d.HoldersNote == "") {
		return
	}
	fmt.Fprintln(w, "\n--- holders (who holds the map's pointer, writers first) ---")
	for _, h := range d.Holders {
		switch h.Kind {
		case report.HolderGlobal:
			name := h.Variable
			if name == "" {
				name = "(unnamed)"
			}
			fmt.Fprintf(w, "global %s at %#x\n", name, h.Addr)
		default:
			how := "frame"
			if h.Kind == report.HolderPointer {
				how = "through a pointer in the frame"
			}
			wr := ""
			if h.Writer {
				wr = ", writer"
			}
			fmt.Fprintf(w, "goroutine %d [%s%s] %s of %s\n\t%s:%d\n", h.Goid, h.Role, wr, how, h.Function, h.File, h.Line)
		}
	}
	if d.HoldersNote != "" {
		fmt.Fprintf(w, "note: %s\n", d.HoldersNote)
	}
}

// printGroups writes one line per crash group, most recently seen first.
func printGroups(out io.Writer, gs []report.Group) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SIGNATURE\tCOUNT\tFIRST SEEN\tLAST SEEN\tBINARIES\tEXAMPLE\tWHAT")
	for _, g := range gs {
		count := fmt.Sprint(g.Count)
		if g.Suppressed > 0 {
			count = fmt.Sprintf("%d (%d counted only)", g.Count, g.Suppressed)
		}
		var bins []string
		for _, b := range g.Binaries {
			bins = append(bins, fmt.Sprintf("%s %s", filepath.Base(b.Exe), b.GoVersion))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Signature, count,
			g.FirstSeen.Local().Format(time.DateTime), g.LastSeen.Local().Format(time.DateTime),
			strings.Join(bins, ", "), g.ExampleID, g.Title)
	}
	return w.Flush()
}

// writeProfile writes cr's goroutines as a pprof goroutine profile to path.
func writeProfile(w io.Writer, cr *report.Crash, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprofdump.Write(f, cr); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "wrote %s: %d goroutines of crash %s (go tool pprof -top|-traces|-http=: %s)\n", path, len(cr.Goroutines), cr.ID, path)
	return err
}
