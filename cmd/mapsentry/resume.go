package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/daemon"
	"github.com/mapsentry/mapsentry/daemon/instance"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/procmem"
)

// resumeFrozenCmd is the unit's ExecStopPost=: after the daemon has gone,
// however it went (SIGKILL, OOM, watchdog), SIGCONT every process its
// frozen records (runtime_dir/frozen, one file each; never the report
// store, so a broken store does not stop it) say it held stopped, then
// every process in its scope still stopped at a crash probe with no record
// (daemon.ResumeStrays). A graceful daemon leaves neither, so this usually
// does nothing. It
// checks each process's identity (pid, start time and PID namespace) so a
// reused PID, or one of another namespace, is never signalled, and it
// refuses to run beside a live daemon of the same directories, which
// resumes its own.
func resumeFrozenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "resume-frozen",
		Short: "Resume processes a dead daemon left frozen (the unit's ExecStopPost)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			lock, err := instance.LockDirs(cfg.RuntimeDir(), cfg.StateDir)
			if err != nil {
				return fmt.Errorf("resume frozen processes: %w", err)
			}
			defer lock.Close()
			recs, err := store.OpenFrozenRecords(cfg.FrozenDir())
			if err != nil {
				return fmt.Errorf("resume frozen processes: %w", err)
			}
			frozen, listErr := recs.List()
			if listErr != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "read frozen records: %v\n", listErr)
			}
			var failed int
			for _, f := range frozen {
				id := procmem.Identity{PID: f.PID, StartTime: f.StartTime, PIDNS: f.PIDNS}
				if err := id.Resume(); err != nil {
					failed++
					fmt.Fprintf(cmd.ErrOrStderr(), "resume pid %d (frozen since %s): %v\n", f.PID, f.Since.Format("15:04:05.000"), err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "resumed pid %d (frozen since %s)\n", f.PID, f.Since.Format("15:04:05.000"))
				if err := recs.Remove(f.PID); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "forget frozen record of pid %d: %v\n", f.PID, err)
				}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("component", "resume-frozen")
			if n := daemon.ResumeStrays(cfg, log); n > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "resumed %d processes stopped at a crash probe with no frozen record\n", n)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d frozen processes could not be resumed", failed, len(frozen))
			}
			return listErr
		},
	}
}
