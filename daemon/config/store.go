package config

import (
	"fmt"
	"path/filepath"
	"time"
)

// StoreConfig bounds the path of a finished report from capture to the
// store (package daemon/internal/publish): the in-memory queue, and the spool that
// takes reports while the store is unavailable (failed to open, full or
// read-only disk, I/O errors).
type StoreConfig struct {
	// QueueMax bounds reports and updates held in memory: waiting for the
	// writer, or kept in memory because neither store nor spool took them.
	QueueMax      int   `mapstructure:"queue_max"`
	QueueMaxBytes int64 `mapstructure:"queue_max_bytes"`
	// SpoolDir holds reports while the store is unavailable. Empty: spool
	// under runtime_dir — under systemd a tmpfs, so a full or read-only
	// state disk does not take the spool with it.
	SpoolDir      string `mapstructure:"spool_dir"`
	SpoolMaxFiles int    `mapstructure:"spool_max_files"`
	SpoolMaxBytes int64  `mapstructure:"spool_max_bytes"`
	// RetryInitial doubles up to RetryMax between attempts to reopen or
	// write the store while it is unavailable.
	RetryInitial time.Duration `mapstructure:"retry_initial"`
	RetryMax     time.Duration `mapstructure:"retry_max"`
}

// RuntimeDir is runtime_dir, or the socket's directory when it is empty
// (/run/mapsentry, the unit's RuntimeDirectory): frozen-process records and,
// by default, the spool live there. Tests that give every daemon its own
// socket thereby give it its own runtime directory too.
func (c Config) RuntimeDir() string {
	if c.RuntimeDirectory != "" {
		return c.RuntimeDirectory
	}
	return filepath.Dir(c.Socket)
}

// FrozenDir holds the records of processes the daemon holds stopped.
func (c Config) FrozenDir() string { return filepath.Join(c.RuntimeDir(), "frozen") }

// SpoolDir is store.spool_dir, or runtime_dir/spool.
func (c Config) SpoolDir() string {
	if c.Store.SpoolDir != "" {
		return c.Store.SpoolDir
	}
	return filepath.Join(c.RuntimeDir(), "spool")
}

// DefaultInstance is the instance name of a daemon that sets none: one
// per host.
const DefaultInstance = "default"

// maxInstance bounds an instance name (it becomes part of an abstract
// unix socket address, at most 107 bytes).
const maxInstance = 64

func validInstance(s string) bool {
	if s == "" || len(s) > maxInstance {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// validateStore checks the instance name (the one-daemon-per-host lock),
// runtime_dir, and store.*: the in-memory queue, the spool that takes
// reports while the store is unavailable, and the reopen retries.
func (c Config) validateStore() []error {
	var errs configErrors
	if !validInstance(c.Instance) {
		errs.bad("instance", c.Instance, fmt.Sprintf("must be 1 to %d letters, digits, '-', '_' or '.'", maxInstance))
	}
	if c.RuntimeDirectory != "" && !filepath.IsAbs(c.RuntimeDirectory) {
		errs.bad("runtime_dir", c.RuntimeDirectory, "must be empty (the socket's directory) or an absolute path")
	}
	s := c.Store
	if s.SpoolDir != "" && !filepath.IsAbs(s.SpoolDir) {
		errs.bad("store.spool_dir", s.SpoolDir, "must be empty (runtime_dir/spool) or an absolute path")
	}
	if s.QueueMax < 1 || s.QueueMax > 1<<20 {
		errs.bad("store.queue_max", s.QueueMax, "must be between 1 and 1048576")
	}
	if s.QueueMaxBytes < 1<<20 {
		errs.bad("store.queue_max_bytes", s.QueueMaxBytes, "must be at least 1 MiB")
	}
	if s.SpoolMaxFiles < 0 {
		errs.bad("store.spool_max_files", s.SpoolMaxFiles, "must be 0 (no spool) or more")
	}
	if s.SpoolMaxBytes < 0 {
		errs.bad("store.spool_max_bytes", s.SpoolMaxBytes, "must be 0 (no spool) or more")
	}
	if s.RetryInitial < 10*time.Millisecond {
		errs.bad("store.retry_initial", s.RetryInitial, "must be at least 10ms")
	}
	if s.RetryMax < s.RetryInitial {
		errs.bad("store.retry_max", s.RetryMax, "must be at least store.retry_initial")
	}
	return errs
}
