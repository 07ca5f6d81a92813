package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/daemon/config"
)

// configCmd prints the effective configuration as this command line sees
// it (same files, environment and flags as `mapsentry daemon` would), with
// the source of every value. It does not ask the running daemon: it answers
// "what would the daemon use if started here and now".
func configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration and where each value came from",
		Long: "Print every configuration key with its effective value and its source: default, file, conf.d,\n" +
			"env or flag (rising precedence). Reads the same files, environment and flags as `mapsentry daemon`.",
		Args: cobra.NoArgs,
	}
	out := output(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(*out); err != nil {
			return err
		}
		c, src, err := config.LoadWithSources(cmd.Flags())
		if err != nil {
			return err
		}
		set := c.Settings(src)
		if *out == "json" {
			return printJSON(cmd.OutOrStdout(), set)
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "KEY\tVALUE\tSOURCE")
		for _, s := range set {
			fmt.Fprintf(w, "%s\t%s\t%s\n", s.Key, config.FormatValue(s.Value), s.Source)
		}
		return w.Flush()
	}
	return cmd
}
