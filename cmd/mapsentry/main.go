// Command mapsentry is the single mapsentry binary: `mapsentry daemon` runs
// the host-wide crash observer; the other subcommands are clients of its
// unix-socket API.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mapsentry:", err)
		os.Exit(1)
	}
}
