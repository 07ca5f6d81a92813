package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/daemon"
	"github.com/mapsentry/mapsentry/daemon/instance"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// resumeFrozenCmd is the unit's ExecStopPost=: after the daemon has gone,
// however it went (SIGKILL, OOM, watchdog), resume what it left stopped.
// Crash holds through ptrace need nothing: the kernel released them when
// the daemon died. What can be left is a SIGSTOP: the crash probe's
// fallback hold not yet taken over, and live decode/dump stops. They are
// found by their frozen records (runtime_dir/frozen, one file each; never
// the report store, so a broken store does not stop it), then by the
// sweep of processes in scope still stopped at a crash probe with no
// record (daemon.ResumeStrays). A graceful daemon leaves neither, so this
// usually does nothing. It checks each process's identity (pid, start time
// and PID namespace) so a reused PID, or one of another namespace, is
// never signalled; a process that is gone is reported as gone, not as
// resumed; and it refuses to run beside a live daemon of the same
// directories, which resumes its own.
func resumeFrozenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "resume-frozen",
		Short: "Resume processes a dead daemon left stopped (the unit's ExecStopPost)",
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
			recErr := resumeRecorded(cmd, recs)
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("component", "resume-frozen")
			if n := daemon.ResumeStrays(cfg, log); n > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "resumed %d processes stopped at a crash probe with no frozen record\n", n)
			}
			return recErr
		},
	}
}

// resumeRecorded resumes the processes the frozen records name and says
// what became of each.
func resumeRecorded(cmd *cobra.Command, recs *store.FrozenRecords) error {
	frozen, listErr := recs.List()
	if listErr != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "read frozen records: %v\n", listErr)
	}
	var failed int
	for _, f := range frozen {
		id := procmem.Identity{PID: f.PID, StartTime: f.StartTime, PIDNS: f.PIDNS}
		since := f.Since.Format("15:04:05.000")
		switch err := id.Resume(); {
		case errors.Is(err, procmem.ErrGone):
			fmt.Fprintf(cmd.OutOrStdout(), "pid %d (stopped since %s) is gone: nothing to resume\n", f.PID, since)
		case err != nil:
			failed++
			fmt.Fprintf(cmd.ErrOrStderr(), "resume pid %d (stopped since %s): %v\n", f.PID, since, err)
			continue
		default:
			fmt.Fprintf(cmd.OutOrStdout(), "resumed pid %d (stopped since %s)\n", f.PID, since)
		}
		if err := recs.Remove(f.PID); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "forget frozen record of pid %d: %v\n", f.PID, err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d stopped processes could not be resumed", failed, len(frozen))
	}
	return listErr
}
