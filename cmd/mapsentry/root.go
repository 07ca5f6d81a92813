package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/daemon"
	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/internal/logsink"
)

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "mapsentry",
		Short:         "Host-wide crash observer for Go programs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	config.Flags(root.PersistentFlags())
	root.AddCommand(daemonCmd(), statusCmd(), psCmd(), crashesCmd(), showCmd(), versionCmd())
	root.AddCommand(configCmd(), deleteCmd(), selftestCmd(), selftestVictimCmd(), resumeFrozenCmd())
	root.AddCommand(decodeCmd(), dumpCmd())
	root.AddCommand(armCmd(), disarmCmd())
	return root
}

// loadConfig reads the one typed config from defaults, file, env and flags.
func loadConfig(cmd *cobra.Command) (config.Config, error) {
	return config.Load(cmd.Flags())
}

func newClient(cmd *cobra.Command) (*client.Client, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	return client.New(cfg.Socket), nil
}

func daemonCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "daemon",
		Short: "Run the crash observer (as root or with the unit's capabilities)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			var lvl slog.Level
			_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
			// Logging never blocks the daemon: goroutines that hold
			// crashing processes log too (logsink).
			out := logsink.New(os.Stderr, 4<<20)
			defer out.Close(5 * time.Second)
			log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: lvl}))
			return daemon.Run(cmd.Context(), cfg, version, log)
		},
	}
}

// output adds -o to cmd and returns a getter.
func output(cmd *cobra.Command) *string {
	return cmd.Flags().StringP("output", "o", "text", "output format: text or json")
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func checkFormat(f string) error {
	if f != "text" && f != "json" {
		return fmt.Errorf("-o %q: want text or json", f)
	}
	return nil
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "mapsentry", version)
		},
	}
}
