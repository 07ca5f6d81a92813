package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/apitype/live"
	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// decodeCmd is `mapsentry decode`: the daemon stops the process, decodes
// one map and resumes it (POST /v1/decode).
func decodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "decode --pid PID --addr ADDR [--type-addr ADDR] [--keys]",
		Short: "Decode one map of a running Go process (stops it briefly; root or api.write_group)",
		Long: `Decode one map of a running Go process. The daemon stops the process
(SIGSTOP, every thread), copies the map's bytes, and resumes it — always,
within freeze.max — then decodes the copy. Text shows the header, a heat map of occupancy and the anomalies;
-o json prints the decoder's full result (docs/hmapdecode.md): the entries
found under stats.entries_found, the header's own count under count (and
classic.count or swiss.used).

Without --type-addr the map's type is looked up among the binary's map type
descriptors by the slot geometry the decoder infers; if none or several fit,
the map is decoded without keys and the note says so.`,
		Args: cobra.NoArgs,
	}
	out := output(cmd)
	pid := cmd.Flags().Int("pid", 0, "process id")
	addr := cmd.Flags().String("addr", "", "map header address (the map value: *hmap / *maps.Map), hex with 0x or decimal")
	typeAddr := cmd.Flags().String("type-addr", "", "map type descriptor address (optional)")
	keys := cmd.Flags().Bool("keys", false, "include raw keys and values (may be secrets)")
	_ = cmd.MarkFlagRequired("pid")
	_ = cmd.MarkFlagRequired("addr")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(*out); err != nil {
			return err
		}
		req := apitype.DecodeRequest{PID: *pid, Keys: *keys, Summary: *out != "json"}
		var err error
		if req.Addr, err = parseAddr("--addr", *addr); err != nil {
			return err
		}
		if *typeAddr != "" {
			if req.TypeAddr, err = parseAddr("--type-addr", *typeAddr); err != nil {
				return err
			}
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		res, err := c.Decode(cmd.Context(), req)
		if err != nil {
			return err
		}
		if *out == "json" {
			return printJSON(cmd.OutOrStdout(), res.Map)
		}
		return printDecode(cmd.OutOrStdout(), res)
	}
	return cmd
}

func parseAddr(flag, s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want an address such as 0xc000012345: %w", flag, s, err)
	}
	return v, nil
}

func printDecode(w io.Writer, res *live.DecodeResult) error {
	printProcess(w, res.Process, res.Freeze)
	printCopy(w, res.Copy)
	if err := hmapdecode.RenderText(w, res.Map); err != nil {
		return err
	}
	if len(res.TypeCandidates) > 0 {
		fmt.Fprintln(w, "type candidates (pass one as --type-addr):")
		for _, c := range res.TypeCandidates {
			fmt.Fprintf(w, "  %#x  %s  (%d-byte unit)\n", c.Addr, c.GoType, c.Unit)
		}
	}
	return nil
}

// printProcess writes what was inspected and how long it was held.
func printProcess(w io.Writer, p apitype.Process, f apitype.Freeze) {
	fmt.Fprintf(w, "process  pid %d  %s  %s %s maps, stripped=%v\n", p.PID, p.Exe, p.GoVersion, p.MapLayout, p.Stripped)
	switch {
	case f.AlreadyStopped:
		fmt.Fprintln(w, "freeze   the process was already stopped; read as it was, left stopped")
	default:
		fmt.Fprintf(w, "freeze   %s frozen (threads stopped in %s), resumed=%v by %s\n",
			time.Duration(f.FrozenNS).Round(time.Microsecond), time.Duration(f.StopWaitNS).Round(time.Microsecond),
			f.Resumed, f.ResumedBy)
	}
}

// printCopy writes what was copied while held and what analysing the copy
// cost after the resume.
func printCopy(w io.Writer, c *apitype.Copy) {
	if c == nil {
		return
	}
	fmt.Fprintf(w, "copy     %.1f MB in %d ranges, %d system calls, %s of the freeze; analysed in %s after the resume (prepared in %s before the stop)\n",
		float64(c.Bytes)/1e6, c.Ranges, c.Calls, time.Duration(c.CopyNS).Round(time.Microsecond),
		time.Duration(c.AnalyseNS).Round(time.Microsecond), time.Duration(c.PrepareNS).Round(time.Microsecond))
	if c.CutRanges > 0 {
		fmt.Fprintf(w, "         %d ranges (%d bytes) left out of the copy", c.CutRanges, c.CutBytes)
		if len(c.Cuts) > 0 {
			fmt.Fprintf(w, ", first %#x: %s", c.Cuts[0].Addr, c.Cuts[0].Reason)
		}
		fmt.Fprintln(w)
	}
}

// dumpCmd is `mapsentry dump`: the daemon stops the process, reads every
// goroutine and resumes it (POST /v1/dump).
func dumpCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dump --pid PID [--summary]",
		Short: "Every goroutine of a running Go process (stops it briefly; root or api.write_group)",
		Long: `Every goroutine of a running Go process with symbolized stacks, stripped
binaries included. The daemon stops the process only to copy its
goroutines' bytes (within freeze.max) and unwinds and names frames from the
copy after resuming it. Text is the Go runtime's
traceback format (what panicparse reads); --summary groups identical stacks
with counts; -o json prints the goroutines ([]symbolizer.Goroutine, the
crash report's "goroutines").`,
		Args: cobra.NoArgs,
	}
	out := output(cmd)
	pid := cmd.Flags().Int("pid", 0, "process id")
	summary := cmd.Flags().Bool("summary", false, "group identical stacks with counts")
	_ = cmd.MarkFlagRequired("pid")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(*out); err != nil {
			return err
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		res, err := c.Dump(cmd.Context(), apitype.DumpRequest{PID: *pid})
		if err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if *out == "json" {
			if *summary {
				return printJSON(w, symbolizer.Summarize(res.Goroutines))
			}
			return printJSON(w, res.Goroutines)
		}
		// The header goes to stderr: stdout stays a traceback that
		// tools parse.
		ew := cmd.ErrOrStderr()
		printProcess(ew, res.Process, res.Freeze)
		printCopy(ew, res.Copy)
		fmt.Fprintf(ew, "goroutines %d, threads %d, truncated=%v\n", len(res.Goroutines), len(res.Threads), res.Truncated)
		for _, e := range res.Errors {
			fmt.Fprintf(ew, "error    %s\n", e)
		}
		if *summary {
			return symbolizer.WriteSummary(w, symbolizer.Summarize(res.Goroutines))
		}
		return symbolizer.WriteTraceback(w, res.Goroutines)
	}
	return cmd
}
