package main

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// selftestVictimCmd is the crashing Go program `mapsentry selftest` runs:
// this very binary, re-executed from a copy (a new inode, because the
// daemon never probes its own binary). It prints "ready", waits for a line
// on stdin (so the daemon can attach first), then writes one map from
// several goroutines until the runtime dies with "fatal error: concurrent
// map writes" and exit status 2 — a real Go fatal, no compiler needed.
func selftestVictimCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "selftest-victim",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m := map[int]int{}
			fmt.Fprintf(cmd.OutOrStdout(), "ready pid=%d\n", os.Getpid())
			if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
				return fmt.Errorf("wait for go: %w", err)
			}
			for w := 0; w < 4; w++ {
				go func() {
					for i := 0; ; i++ {
						m[i%1024+w<<20] = i
					}
				}()
			}
			time.Sleep(60 * time.Second)
			return fmt.Errorf("no crash within 60s")
		},
	}
}
