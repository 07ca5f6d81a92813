package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/report"
)

// query runs one request against the daemon and prints its result: as JSON
// with -o json, else with text.
func query[T any](cmd *cobra.Command, out string, fetch func(*client.Client, context.Context) (T, error), text func(io.Writer, T) error) error {
	if err := checkFormat(out); err != nil {
		return err
	}
	c, err := newClient(cmd)
	if err != nil {
		return err
	}
	v, err := fetch(c, cmd.Context())
	if err != nil {
		return err
	}
	if out == "json" {
		return printJSON(cmd.OutOrStdout(), v)
	}
	return text(cmd.OutOrStdout(), v)
}

func statusCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "status", Short: "Daemon health and counters", Args: cobra.NoArgs}
	out := output(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return query(cmd, *out, (*client.Client).Status, printStatus)
	}
	return cmd
}

func printStatus(out io.Writer, s *apitype.Status) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "daemon\tpid %d, %s, up %s\n", s.PID, s.Version, time.Since(s.StartedAt).Round(time.Second))
	fmt.Fprintf(w, "socket\t%s\n", s.Socket)
	fmt.Fprintf(w, "state\t%s (%d crashes stored)\n", s.StateDir, s.Crashes)
	fmt.Fprintf(w, "store\t%s\n", storeLine(s.Store))
	fmt.Fprintf(w, "freeze\t%v\n", s.Freeze)
	if s.Scope.Description != "" {
		fmt.Fprintf(w, "scope\t%s\n", s.Scope.Description)
	}
	type section struct {
		name string
		v    any
	}
	// The exec gate has a line of its own (its filesystem list is long).
	disc := s.Discovery
	disc.Gate = apitype.GateStatus{}
	sections := []section{{"discovery", disc}, {"capture", s.Capture}, {"kernel", s.Kernel}, {"events", s.Events}}
	if s.Export != nil {
		sections = append(sections, section{"export", s.Export})
	}
	for _, sec := range sections {
		fmt.Fprintf(w, "%s\t%s\n", sec.name, counters(sec.v, "exec_gate"))
	}
	fmt.Fprintf(w, "exec gate\t%s\n", gateLine(s.Discovery.Gate))
	if s.StraysResumed > 0 {
		fmt.Fprintf(w, "strays\t%d stopped processes resumed at start-up\n", s.StraysResumed)
	}
	for _, c := range s.Checks {
		if !c.OK {
			fmt.Fprintf(w, "degraded\t%s: %s\n", c.Name, c.Detail)
		}
	}
	return w.Flush()
}

// gateLine summarizes the exec gate: its state, what it covers, and what
// it had to let through at the deadline.
func gateLine(g apitype.GateStatus) string {
	if g.State != "active" {
		if g.Reason != "" {
			return g.State + ": " + g.Reason
		}
		return g.State
	}
	var covered int
	var not []string
	for _, f := range g.Filesystems {
		switch {
		case f.Covered:
			covered++
		case !strings.HasPrefix(f.Reason, "pseudo"):
			not = append(not, f.Mount+" ("+f.FSType+": "+f.Reason+")")
		}
	}
	line := fmt.Sprintf("active, deadline %s, %d filesystems covered in %d mount namespaces, %d execs held, %d allowed at the deadline",
		time.Duration(g.DeadlineNS), covered, g.MountNamespaces, g.Held, g.DeadlineHit)
	if len(not) > 0 {
		line += "; not covered: " + strings.Join(not, ", ")
	}
	return line
}

// storeLine says whether reports reach the store, and what waits or was
// lost on the way.
func storeLine(st apitype.StoreStats) string {
	line := st.State
	if st.Error != "" {
		line += " since " + st.Since.Format(time.TimeOnly) + ": " + st.Error
	}
	line += fmt.Sprintf(" (queued %d, spooled %d, in memory %d", st.Queued, st.Spooled, st.Memory)
	if st.Dropped != (apitype.StoreDropped{}) {
		line += "; dropped: " + counters(st.Dropped)
	}
	return line + ")"
}

func psCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ps", Short: "Watched Go binaries, their processes and probes", Args: cobra.NoArgs}
	out := output(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return query(cmd, *out, (*client.Client).PS, printPS)
	}
	return cmd
}

func printPS(out io.Writer, bins []apitype.Binary) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PATH\tGO\tMAPS\tSTRIPPED\tPIDS\tPROBES")
	for _, b := range bins {
		probes := fmt.Sprintf("%d attached", len(b.Probes))
		if b.Error != "" {
			probes = "none: " + b.Error
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%s\n", b.Path, b.GoVersion, b.MapLayout, b.Stripped, joinInts(b.PIDs), probes)
	}
	return w.Flush()
}

func crashesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "crashes", Short: "List captured crashes, newest first", Args: cobra.NoArgs}
	out := output(cmd)
	limit := cmd.Flags().Int("limit", 50, "how many crashes at most")
	group := cmd.Flags().Bool("group", false, "one line per crash signature: count, first/last seen, binaries, an example report")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *group {
			return query(cmd, *out, (*client.Client).Groups, printGroups)
		}
		fetch := func(c *client.Client, ctx context.Context) ([]report.Crash, error) { return c.Crashes(ctx, *limit) }
		return query(cmd, *out, fetch, printCrashes)
	}
	return cmd
}

func printCrashes(out io.Writer, cs []report.Crash) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTIME\tPID\tKIND\tEXE\tMESSAGE")
	for _, cr := range cs {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", cr.ID, cr.CapturedAt.Local().Format(time.DateTime),
			cr.Process.PID, cr.Fatal.Kind, cr.Process.Exe, cr.Fatal.Message)
	}
	return w.Flush()
}

func showCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "show ID", Short: "Show one crash report", Args: cobra.ExactArgs(1)}
	out := output(cmd)
	prof := cmd.Flags().String("pprof", "", "write the goroutines as a pprof goroutine profile to `FILE` (go tool pprof -top|-traces|-http FILE)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		fetch := func(c *client.Client, ctx context.Context) (*report.Crash, error) { return c.Crash(ctx, args[0]) }
		if *prof != "" {
			return query(cmd, *out, fetch, func(w io.Writer, cr *report.Crash) error { return writeProfile(w, cr, *prof) })
		}
		return query(cmd, *out, fetch, printCrash)
	}
	return cmd
}

func printCrash(out io.Writer, cr *report.Crash) error {
	if err := printDiagnosis(out, cr); err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	p := cr.Process
	fmt.Fprintf(w, "crash\t%s (schema %d)\n", cr.ID, cr.Schema)
	fmt.Fprintf(w, "captured\t%s on %s\n", cr.CapturedAt.Local().Format(time.RFC3339Nano), cr.Host)
	fmt.Fprintf(w, "fatal\t%s [%s]\n", cr.Fatal.Message, cr.Fatal.Kind)
	fmt.Fprintf(w, "process\tpid %d  %s\n", p.PID, p.Exe)
	fmt.Fprintf(w, "go\t%s, %s maps, stripped=%v\n", p.GoVersion, p.MapLayout, p.Stripped)
	if len(p.Cmdline) > 0 {
		fmt.Fprintf(w, "cmdline\t%s\n", strings.Join(p.Cmdline, " "))
	}
	if p.Unit != "" || p.Container != "" {
		fmt.Fprintf(w, "unit\t%s %s\n", p.Unit, p.Container)
	}
	f := cr.Freeze
	fmt.Fprintf(w, "freeze\t%s frozen, all threads stopped=%v, resumed=%v, deadline hit=%v\n",
		time.Duration(f.FrozenNS), f.AllThreadsStopped, f.Resumed, f.DeadlineHit)
	switch {
	case f.ExitStatus != nil:
		fmt.Fprintf(w, "exit\tstatus %d\n", *f.ExitStatus)
	case f.ExitSignal != nil:
		fmt.Fprintf(w, "exit\tsignal %d\n", *f.ExitSignal)
	}
	for _, e := range cr.Fatal.Events {
		fmt.Fprintf(w, "event\ttid %d goroutine %d %s ← %s at %s\n", e.TID, e.Goid, e.Function, e.CallerFunction,
			e.WallTime.Local().Format("15:04:05.000000"))
	}
	for _, e := range cr.Capture.Errors {
		fmt.Fprintf(w, "error\t%s\n", e)
	}
	if len(cr.Capture.Missing) > 0 {
		fmt.Fprintf(w, "missing\t%s\n", strings.Join(cr.Capture.Missing, ", "))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return printCrashDump(out, cr)
}

// counters renders a section of the status (a struct of counters) as
// "a=1 b=2" by its JSON names, sorted, with nested objects (errors by
// reason) inline: a field added to the section shows without a change here.
func counters(v any, skip ...string) string {
	raw, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return string(raw)
	}
	for _, k := range skip {
		delete(m, k)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := m[k]
		if sub, ok := v.(map[string]any); ok {
			if len(sub) == 0 {
				continue
			}
			b, _ := json.Marshal(sub)
			parts = append(parts, k+"="+string(b))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%v", k, v))
	}
	return strings.Join(parts, " ")
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}
