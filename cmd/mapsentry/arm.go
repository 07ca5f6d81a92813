package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/apitype"
)

// armTarget adds --exe and --pid to cmd and returns the request builder.
func armTarget(cmd *cobra.Command) func() (apitype.ArmRequest, error) {
	exe := cmd.Flags().String("exe", "", "executable: every process running it, now and until the arm ends")
	pid := cmd.Flags().Int("pid", 0, "one process (PID-filtered probes)")
	return func() (apitype.ArmRequest, error) {
		if (*exe == "") == (*pid == 0) {
			return apitype.ArmRequest{}, fmt.Errorf("give exactly one of --exe PATH and --pid PID")
		}
		req := apitype.ArmRequest{PID: *pid}
		if *exe != "" {
			abs, err := filepath.Abs(*exe)
			if err != nil {
				return req, fmt.Errorf("--exe %s: %w", *exe, err)
			}
			req.Exe = abs
		}
		return req, nil
	}
}

func armCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "arm (--exe PATH | --pid PID) [--for DURATION]",
		Short: "Arm map-op probes: record who touches which map, for the partners of a map crash",
		Long: `Arm the map-op flight recorder on an executable or one process: uprobes on the
runtime's map functions record the last map operation of every thread and the
last writers of every map, so that a map crash names the other goroutine with
certainty. Each map operation then costs ~0.7 us more (docs/mapops.md).
A write operation: root or api.write_group. Without arguments, list what is armed.`,
		Args: cobra.NoArgs,
	}
	target := armTarget(cmd)
	dur := cmd.Flags().Duration("for", 0, "disarm automatically after this long (default: until disarmed)")
	out := output(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(*out); err != nil {
			return err
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		if !cmd.Flags().Changed("exe") && !cmd.Flags().Changed("pid") {
			st, err := c.MapOps(cmd.Context())
			if err != nil {
				return err
			}
			if *out == "json" {
				return printJSON(cmd.OutOrStdout(), st)
			}
			return printArms(cmd, st)
		}
		req, err := target()
		if err != nil {
			return err
		}
		if *dur < 0 {
			return fmt.Errorf("--for %s: must be positive", *dur)
		}
		if *dur > 0 {
			req.For = dur.String()
		}
		st, err := c.Arm(cmd.Context(), req)
		if err != nil {
			return err
		}
		if *out == "json" {
			return printJSON(cmd.OutOrStdout(), st)
		}
		w := cmd.OutOrStdout()
		what := st.Path
		if st.PID != 0 {
			what = fmt.Sprintf("pid %d (%s)", st.PID, st.Path)
		}
		until := "until disarmed"
		if !st.Until.IsZero() {
			until = "until " + st.Until.Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "armed %s %s: %d probes attached\n", what, until, st.Links)
		if st.Links == 0 && st.Error == "" && st.Scope == "binary" {
			fmt.Fprintln(w, "no process runs it yet: its processes are armed when they start")
		}
		for _, r := range st.Refused {
			fmt.Fprintf(w, "  not probed: %s: %s\n", r.Name, r.Reason)
		}
		if st.Error != "" {
			fmt.Fprintln(w, "  error:", st.Error)
		}
		return nil
	}
	return cmd
}

func disarmCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disarm (--exe PATH | --pid PID)",
		Short: "Remove map-op probes armed with `mapsentry arm` (or by mapops.mode on-crash)",
		Args:  cobra.NoArgs,
	}
	target := armTarget(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		req, err := target()
		if err != nil {
			return err
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		d, err := c.Disarm(cmd.Context(), req)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "disarmed %d arm request(s); %d map-op probes left on the host\n", d.Disarmed, d.Links)
		return nil
	}
	return cmd
}

func printArms(cmd *cobra.Command, st *apitype.MapOpsState) error {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "mode %s (on-crash arms for %s)", st.Mode, st.OnCrashFor)
	if len(st.Always) > 0 {
		fmt.Fprintf(w, ", always: %s", strings.Join(st.Always, " "))
	}
	fmt.Fprintf(w, "\nlinks: %d (kernel: %d)\n", st.Links, st.KernelLinks)
	if !st.Loaded {
		fmt.Fprintln(w, "flight recorder not loaded:", st.LoadError)
	}
	if len(st.Arms) == 0 {
		fmt.Fprintln(w, "nothing armed")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tTARGET\tWHY\tUNTIL\tLINKS\tERROR")
	for _, a := range st.Arms {
		target := a.Path
		if a.PID != 0 {
			target = fmt.Sprintf("%d %s", a.PID, a.Path)
		}
		until := "-"
		if !a.Until.IsZero() {
			until = a.Until.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", a.Scope, target, a.Why, until, a.Links, a.Error)
	}
	return tw.Flush()
}
