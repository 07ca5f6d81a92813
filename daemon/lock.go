package daemon

import (
	"os"

	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/daemon/instance"
	"github.com/mapsentry/mapsentry/daemon/internal/publish"
)

// lock takes the one-daemon-per-host lock (daemon/instance): the instance
// name, and the state, runtime and spool directories, created first with
// the modes the store, the socket and the spool would give them.
func (d *Daemon) lock() (*instance.Lock, error) {
	cfg := d.cfg
	// Errors are left to the lock and to the users of each directory: a
	// read-only state directory that exists is still locked, and the store
	// then runs degraded.
	_ = os.MkdirAll(cfg.StateDir, 0o750)
	_ = os.MkdirAll(cfg.RuntimeDir(), 0o755)
	_ = os.MkdirAll(cfg.SpoolDir(), 0o700)
	return instance.Acquire(cfg.Instance, []string{cfg.StateDir, cfg.RuntimeDir(), cfg.SpoolDir()}, instance.Info{
		PID: os.Getpid(), Instance: cfg.Instance, StateDir: cfg.StateDir, Socket: cfg.Socket, Since: d.started,
	})
}

// publishConfig maps the store.* keys to the publisher's config.
func publishConfig(cfg config.Config) publish.Config {
	s := cfg.Store
	return publish.Config{
		StateDir: cfg.StateDir, Retain: cfg.Report.Retain,
		QueueMax: s.QueueMax, QueueMaxBytes: s.QueueMaxBytes,
		SpoolDir: cfg.SpoolDir(), SpoolMaxFiles: s.SpoolMaxFiles, SpoolMaxBytes: s.SpoolMaxBytes,
		RetryInitial: s.RetryInitial, RetryMax: s.RetryMax,
	}
}
