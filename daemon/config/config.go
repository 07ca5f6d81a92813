// Package config owns the daemon's and CLI's configuration: one typed
// struct, loaded once with viper from embedded defaults, the config file,
// conf.d snippets, MAPSENTRY_* environment variables and flags (in rising
// precedence), and validated with errors that name the key and the value.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DefaultFile is the optional config file.
const DefaultFile = "/etc/mapsentry/mapsentry.yaml"

// Config is every setting, typed. Keys in docs/config.md.
type Config struct {
	Socket    string          `mapstructure:"socket"`
	StateDir  string          `mapstructure:"state_dir"`
	LogLevel  string          `mapstructure:"log_level"`
	Discovery DiscoveryConfig `mapstructure:"discovery"`
	Freeze    FreezeConfig    `mapstructure:"freeze"`
	Capture   CaptureConfig   `mapstructure:"capture"`
	Report    ReportConfig    `mapstructure:"report"`
}

type DiscoveryConfig struct {
	// Include and Exclude are executable path globs ("/**" suffix: a whole
	// directory). Empty Include: every Go binary on the host.
	Include []string      `mapstructure:"include"`
	Exclude []string      `mapstructure:"exclude"`
	Rescan  time.Duration `mapstructure:"rescan"`
}

type FreezeConfig struct {
	// Enabled stops crashing processes for capture. Off: observe only.
	Enabled bool `mapstructure:"enabled"`
	// Max bounds every freeze; what is not captured by then is missing.
	Max time.Duration `mapstructure:"max"`
	// StopWait bounds the wait for every thread to reach the stopped state.
	StopWait time.Duration `mapstructure:"stop_wait"`
}

type CaptureConfig struct {
	// MaxBytes bounds reads from a crashed process's memory.
	MaxBytes int64 `mapstructure:"max_bytes"`
	// DebugHold keeps a process frozen this long after capture. Test only:
	// it exists so tests can kill the daemon while it holds a process.
	DebugHold time.Duration `mapstructure:"debug_hold"`
}

type ReportConfig struct {
	// Cmdline records the crashed process's command line.
	Cmdline bool `mapstructure:"cmdline"`
	// Retain is how many crash reports the store keeps (oldest dropped).
	Retain int `mapstructure:"retain"`
}

// defaults are the embedded defaults: a working daemon with no file.
var defaults = map[string]any{
	"socket":             "/run/mapsentry/mapsentry.sock",
	"state_dir":          "/var/lib/mapsentry",
	"log_level":          "info",
	"discovery.include":  []string{},
	"discovery.exclude":  []string{},
	"discovery.rescan":   "5s",
	"freeze.enabled":     true,
	"freeze.max":         "2s",
	"freeze.stop_wait":   "500ms",
	"capture.max_bytes":  int64(256 << 20),
	"capture.debug_hold": "0s",
	"report.cmdline":     true,
	"report.retain":      10000,
}

// Flags adds the flags that override config keys to fs.
func Flags(fs *pflag.FlagSet) {
	fs.String("config", DefaultFile, "config file (optional; conf.d/*.yaml beside it is read too)")
	fs.String("socket", "", "unix socket of the daemon API (env MAPSENTRY_SOCKET)")
	fs.String("state-dir", "", "state directory: store and frozen-process records (env MAPSENTRY_STATE_DIR)")
	fs.String("log-level", "", "debug, info, warn or error")
}

var flagKeys = map[string]string{"socket": "socket", "state-dir": "state_dir", "log-level": "log_level"}

// Load reads the configuration. fs may be nil.
func Load(fs *pflag.FlagSet) (Config, error) {
	v := viper.New()
	for k, val := range defaults {
		v.SetDefault(k, val)
	}
	v.SetEnvPrefix("MAPSENTRY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()

	file := DefaultFile
	explicit := false
	if fs != nil {
		if f := fs.Lookup("config"); f != nil {
			file, explicit = f.Value.String(), f.Changed
		}
	}
	if env := os.Getenv("MAPSENTRY_CONFIG"); env != "" && !explicit {
		file, explicit = env, true
	}
	if err := readFiles(v, file, explicit); err != nil {
		return Config{}, err
	}
	if fs != nil {
		for flag, key := range flagKeys {
			if f := fs.Lookup(flag); f != nil && f.Changed {
				v.Set(key, f.Value.String())
			}
		}
	}
	var c Config
	if err := v.Unmarshal(&c); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, c.Validate()
}

// readFiles merges the config file, then conf.d/*.yaml in name order.
func readFiles(v *viper.Viper, file string, explicit bool) error {
	if file == "" {
		return nil
	}
	v.SetConfigType("yaml")
	f, err := os.Open(file)
	switch {
	case err == nil:
		err = v.MergeConfig(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("config file %s: %w", file, err)
		}
	case errors.Is(err, os.ErrNotExist) && !explicit:
	default:
		return fmt.Errorf("config file: %w", err)
	}
	snippets, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "conf.d", "*.yaml"))
	sort.Strings(snippets)
	for _, s := range snippets {
		f, err := os.Open(s)
		if err != nil {
			return fmt.Errorf("config snippet: %w", err)
		}
		err = v.MergeConfig(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("config snippet %s: %w", s, err)
		}
	}
	return nil
}

// Validate checks every value and names the key of the first bad one.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, val any, why string) {
		errs = append(errs, fmt.Errorf("config %s=%v: %s", key, val, why))
	}
	if !filepath.IsAbs(c.Socket) {
		bad("socket", c.Socket, "must be an absolute path")
	}
	if !filepath.IsAbs(c.StateDir) {
		bad("state_dir", c.StateDir, "must be an absolute path")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", c.LogLevel, "must be debug, info, warn or error")
	}
	if c.Discovery.Rescan < 100*time.Millisecond {
		bad("discovery.rescan", c.Discovery.Rescan, "must be at least 100ms")
	}
	for _, p := range append(append([]string{}, c.Discovery.Include...), c.Discovery.Exclude...) {
		if _, err := filepath.Match(strings.TrimSuffix(p, "/**"), ""); err != nil {
			bad("discovery.include/exclude", p, "not a valid glob")
		}
	}
	if c.Freeze.Max < 10*time.Millisecond || c.Freeze.Max > 5*time.Minute {
		bad("freeze.max", c.Freeze.Max, "must be between 10ms and 5m")
	}
	if c.Freeze.StopWait <= 0 || c.Freeze.StopWait > c.Freeze.Max {
		bad("freeze.stop_wait", c.Freeze.StopWait, "must be positive and at most freeze.max")
	}
	if c.Capture.MaxBytes < 1<<20 {
		bad("capture.max_bytes", c.Capture.MaxBytes, "must be at least 1 MiB")
	}
	if c.Capture.DebugHold < 0 || (c.Capture.DebugHold > 0 && c.Capture.DebugHold >= c.Freeze.Max) {
		bad("capture.debug_hold", c.Capture.DebugHold, "must be below freeze.max")
	}
	if c.Report.Retain < 1 {
		bad("report.retain", c.Report.Retain, "must be at least 1")
	}
	return errors.Join(errs...)
}
