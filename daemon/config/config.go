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

	"github.com/spf13/cast"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DefaultFile is the optional config file.
const DefaultFile = "/etc/mapsentry/mapsentry.yaml"

// Config is every setting, typed. Keys in docs/config.md.
type Config struct {
	Socket   string `mapstructure:"socket"`
	StateDir string `mapstructure:"state_dir"`
	// RuntimeDirectory is runtime_dir; use RuntimeDir(), which fills in
	// its default.
	RuntimeDirectory string `mapstructure:"runtime_dir"`
	// Instance names the daemon for the one-daemon-per-host lock
	// (daemon/instance): a second daemon of the same instance refuses to
	// start. Tests give every daemon its own.
	Instance  string          `mapstructure:"instance"`
	LogLevel  string          `mapstructure:"log_level"`
	Store     StoreConfig     `mapstructure:"store"`
	Discovery DiscoveryConfig `mapstructure:"discovery"`
	Freeze    FreezeConfig    `mapstructure:"freeze"`
	Capture   CaptureConfig   `mapstructure:"capture"`
	Report    ReportConfig    `mapstructure:"report"`
	API       APIConfig       `mapstructure:"api"`
	Export    ExportConfig    `mapstructure:"export"`
	MapOps    MapOpsConfig    `mapstructure:"mapops"`
}

// MapOps modes.
const (
	MapOpsOff     = "off"
	MapOpsOnCrash = "on-crash"
	MapOpsAlways  = "always"
)

// MapOpsConfig is the opt-in map-op flight recorder: uprobes on the
// runtime's map functions that remember who touched which map, for the
// partners of a map crash. Each hit costs ~0.7 us, so it is never on for
// everything: `mapsentry arm` arms one binary or process by hand.
type MapOpsConfig struct {
	// Mode is off, on-crash (after a binary's first map fatal, arm its
	// processes for OnCrashFor) or always (binaries matching Always).
	Mode       string        `mapstructure:"mode"`
	OnCrashFor time.Duration `mapstructure:"on_crash_for"`
	// Always are executable globs armed for good in mode always.
	Always []string `mapstructure:"always"`
}

// APIConfig is who may use the socket API. Permission comes from the
// caller's peer credentials (SO_PEERCRED), checked on every connection.
type APIConfig struct {
	// Group (name or numeric gid) owns the socket and may use read
	// routes. Empty, or a group that does not exist: root only.
	Group string `mapstructure:"group"`
	// WriteGroup may also use write routes. Empty: root only.
	WriteGroup string `mapstructure:"write_group"`
}

type DiscoveryConfig struct {
	// Include and Exclude are executable path globs ("/**" suffix: a whole
	// directory). Empty Include: every Go binary on the host.
	Include []string      `mapstructure:"include"`
	Exclude []string      `mapstructure:"exclude"`
	Rescan  time.Duration `mapstructure:"rescan"`
	// MaxBinaries caps the binaries kept probed (least recently run idle
	// ones are detached first); probes otherwise live as long as the file.
	MaxBinaries int `mapstructure:"max_binaries"`
	// Workers is how many binaries are inspected and probed at once.
	Workers int `mapstructure:"workers"`
	// ExecRingBufferBytes sizes the kernel-to-daemon exec event ring
	// buffer (apart from crash events: capture.ring_buffer_bytes).
	ExecRingBufferBytes int64 `mapstructure:"exec_ring_buffer_bytes"`
	// ExecGate holds each exec of a new binary until its probes are in.
	ExecGate ExecGateConfig `mapstructure:"exec_gate"`
}

// ExecGateConfig is the fanotify exec gate (FAN_OPEN_EXEC_PERM). It needs
// CAP_SYS_ADMIN; without it discovery falls back to exec events and says
// so in status.
type ExecGateConfig struct {
	Enabled bool `mapstructure:"enabled"`
	// Deadline bounds one exec's wait; then it runs and probes follow.
	Deadline time.Duration `mapstructure:"deadline"`
}

type FreezeConfig struct {
	// Enabled holds crashing processes for capture. Off: observe only.
	Enabled bool `mapstructure:"enabled"`
	// Max is the freeze budget, from the crash probe's event to the
	// release; what is not captured by then is missing.
	Max time.Duration `mapstructure:"max"`
	// StopWait bounds the wait for every thread to reach the stopped state.
	StopWait time.Duration `mapstructure:"stop_wait"`
	// Hold is how a crashing process is held: HoldPtrace (the crashing
	// threads wait inside the probe until ptrace holds the process:
	// invisible to its parent) or HoldSigstop (SIGSTOP at the probe).
	Hold string `mapstructure:"hold"`
	// ProbeWait bounds one crashing thread's wait inside the probe.
	ProbeWait time.Duration `mapstructure:"probe_wait"`
	// ProbeWaiters bounds the processes whose crashing threads wait
	// inside probes at once (0: sixteen per CPU, at most 1024): the first thread of a
	// process takes a slot, its others wait with it. Each waits on a CPU,
	// yielding it.
	ProbeWaiters int `mapstructure:"probe_waiters"`
	// Nice is the daemon's scheduling priority: a held process waits for
	// the daemon, so under CPU contention (a crash storm) it should win.
	Nice int `mapstructure:"nice"`
	// RealTime is the SCHED_FIFO priority a held process's threads run
	// at from the moment the probe's waiters may leave until each is in
	// its stop (0: none, only Nice): a nice value is a weight, and in a
	// crash storm a thread at nice -20 can wait tens of ms for a CPU.
	RealTime int `mapstructure:"realtime"`
}

// Hold modes (freeze.hold).
const (
	HoldPtrace  = "ptrace"
	HoldSigstop = "sigstop"
)

type CaptureConfig struct {
	// MaxBytes bounds reads from a crashed process's memory.
	MaxBytes int64 `mapstructure:"max_bytes"`
	// Core writes a compact ELF core of each crashed process while frozen.
	Core CoreConfig `mapstructure:"core"`
	// RingBufferBytes sizes the kernel-to-daemon crash event ring buffer
	// (crash and exit events; exec events have their own).
	RingBufferBytes int64 `mapstructure:"ring_buffer_bytes"`
	// DebugHold keeps a process frozen this long after capture. Test only:
	// it exists so tests can kill the daemon while it holds a process.
	DebugHold time.Duration `mapstructure:"debug_hold"`
	// DebugBlockEventsAfter blocks the event loop for good this long after
	// start, as a wedged daemon's would. Test only: systemd's watchdog must
	// then restart the daemon (integration/systemd_test.go). 0: never.
	DebugBlockEventsAfter time.Duration `mapstructure:"debug_block_events_after"`
	// Loop is the crash-loop budget: full captures per loop and interval.
	Loop LoopConfig `mapstructure:"loop"`
	// Workers bounds the captures copying from held processes at once;
	// Sessions the crashing processes handled at once (beyond: released
	// uncaptured, counted in capture.dropped).
	Workers  int `mapstructure:"workers"`
	Sessions int `mapstructure:"sessions"`
}

// LoopConfig bounds what one crash loop (the same binary crashing at the
// same code path again and again, e.g. a service restarted by systemd)
// costs the host: MaxFull full captures per Interval, every other crash
// only counted (released at once, one summary record per interval).
type LoopConfig struct {
	MaxFull  int           `mapstructure:"max_full"`
	Interval time.Duration `mapstructure:"interval"`
}

// CoreConfig: cores hold the process's whole writable memory (secrets
// included), so they are off by default, capped in size and count.
type CoreConfig struct {
	Enabled  bool  `mapstructure:"enabled"`
	MaxBytes int64 `mapstructure:"max_bytes"` // per core
	Keep     int   `mapstructure:"keep"`      // newest cores kept under state_dir/cores
}

type ReportConfig struct {
	// Cmdline records the crashed process's command line. Off by default:
	// arguments carry secrets often enough. Environment variables are never
	// recorded, whatever the configuration.
	Cmdline bool `mapstructure:"cmdline"`
	// Values records map keys and values and variable values (from delve)
	// in reports. Off by default: they are often secrets.
	Values bool `mapstructure:"values"`
	// Retain is how many crash reports the store keeps (oldest dropped).
	Retain int `mapstructure:"retain"`
}

// defaults are the embedded defaults: a working daemon with no file.
var defaults = map[string]any{
	"socket":                           "/run/mapsentry/mapsentry.sock",
	"state_dir":                        "/var/lib/mapsentry",
	"runtime_dir":                      "",
	"instance":                         DefaultInstance,
	"store.queue_max":                  256,
	"store.queue_max_bytes":            int64(64 << 20),
	"store.spool_dir":                  "",
	"store.spool_max_files":            1000,
	"store.spool_max_bytes":            int64(64 << 20),
	"store.retry_initial":              "1s",
	"store.retry_max":                  "1m",
	"log_level":                        "info",
	"discovery.include":                []string{},
	"discovery.exclude":                []string{},
	"discovery.rescan":                 "30s",
	"discovery.max_binaries":           4096,
	"discovery.workers":                4,
	"discovery.exec_ring_buffer_bytes": int64(256 << 10),
	"discovery.exec_gate.enabled":      true,
	"discovery.exec_gate.deadline":     "50ms",
	"freeze.enabled":                   true,
	"freeze.max":                       "2s",
	"freeze.stop_wait":                 "1s",
	"freeze.nice":                      -20,
	"freeze.realtime":                  1,
	"freeze.hold":                      HoldPtrace,
	"freeze.probe_wait":                "1s",
	"freeze.probe_waiters":             0,
	"capture.workers":                  4,
	"capture.sessions":                 256,
	"capture.max_bytes":                int64(256 << 20),
	"capture.debug_hold":               "0s",
	"capture.core.enabled":             false,
	"capture.core.max_bytes":           int64(256 << 20),
	"capture.core.keep":                10,
	"capture.loop.max_full":            5,
	"capture.loop.interval":            "1m",
	"capture.ring_buffer_bytes":        int64(1 << 20),
	"report.cmdline":                   false,
	"report.values":                    false,
	"report.retain":                    10000,
	"api.group":                        "mapsentry",
	"api.write_group":                  "",
	"mapops.mode":                      MapOpsOff,
	"mapops.on_crash_for":              "1h",
	"mapops.always":                    []string{},
	// Test only (docs/config.md).
	"capture.debug_block_events_after": "0s",
	// export.*: see export.go.
	"export.enabled":              true,
	"export.otlp.protocol":        "grpc",
	"export.otlp.endpoint":        "127.0.0.1:4317",
	"export.otlp.url_path":        "",
	"export.otlp.insecure":        true,
	"export.otlp.timeout":         "10s",
	"export.otlp.compression":     "",
	"export.otlp.headers":         map[string]string{},
	"export.otlp.tls.ca_file":     "",
	"export.otlp.tls.cert_file":   "",
	"export.otlp.tls.key_file":    "",
	"export.otlp.tls.server_name": "",
	"export.queue.batch_size":     32,
	"export.queue.max_age":        "168h",
	"export.queue.max_pending":    10000,
	"export.queue.retry_initial":  "1s",
	"export.queue.retry_max":      "5m",
	"export.queue.poll":           "30s",
	"export.metrics.enabled":      false,
	"export.metrics.interval":     "60s",
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
	c, _, err := LoadWithSources(fs)
	return c, err
}

// LoadWithSources reads the configuration and says where each key's
// effective value came from.
func LoadWithSources(fs *pflag.FlagSet) (Config, Sources, error) {
	v := viper.New()
	src := Sources{}
	for k, val := range defaults {
		v.SetDefault(k, val)
		src[k] = Source{Kind: SourceDefault}
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
	if err := readFiles(v, file, explicit, src); err != nil {
		return Config{}, nil, err
	}
	for k := range defaults {
		name := EnvName(k)
		val := os.Getenv(name)
		if val == "" {
			continue
		}
		src[k] = Source{Kind: SourceEnv, Where: name}
		if _, isList := defaults[k].([]string); isList {
			// Lists in the environment are space-separated (globs may
			// contain commas, never unquoted spaces in practice).
			v.Set(k, strings.Fields(val))
		}
	}
	if fs != nil {
		for flag, key := range flagKeys {
			if f := fs.Lookup(flag); f != nil && f.Changed {
				v.Set(key, f.Value.String())
				src[key] = Source{Kind: SourceFlag, Where: "--" + flag}
			}
		}
	}
	if err := checkTypes(v, src); err != nil {
		return Config{}, nil, err
	}
	var c Config
	if err := v.Unmarshal(&c); err != nil {
		return Config{}, nil, fmt.Errorf("config: %w", err)
	}
	return c, src, c.Validate()
}

// checkTypes rejects values of the wrong type by key, value and source,
// before decoding (whose errors name neither the value nor its source).
func checkTypes(v *viper.Viper, src Sources) error {
	var errs []error
	for _, k := range Keys() {
		val := v.Get(k)
		var err error
		var want string
		switch def := defaults[k].(type) {
		case bool:
			want = "true or false"
			_, err = cast.ToBoolE(val)
		case int, int64:
			want = "an integer"
			_, err = cast.ToInt64E(val)
		case string:
			if _, derr := time.ParseDuration(def); derr == nil {
				want = "a duration such as 500ms or 2s"
				_, err = cast.ToDurationE(val)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("config %s=%v (from %s): must be %s", k, val, src[k], want))
		}
	}
	return errors.Join(errs...)
}

// EnvName is the environment variable that sets key.
func EnvName(key string) string {
	return "MAPSENTRY_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// readFiles merges the config file, then conf.d/*.yaml in name order,
// recording in src which file set each key. Unknown keys are errors: a
// misspelt key silently ignored is a setting the operator thinks is on.
func readFiles(v *viper.Viper, file string, explicit bool, src Sources) error {
	if file == "" {
		return nil
	}
	v.SetConfigType("yaml")
	switch err := mergeFile(v, file, SourceFile, src); {
	case err == nil:
	case errors.Is(err, os.ErrNotExist) && !explicit:
	default:
		return err
	}
	snippets, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "conf.d", "*.yaml"))
	sort.Strings(snippets)
	for _, s := range snippets {
		if err := mergeFile(v, s, SourceConfD, src); err != nil {
			return err
		}
	}
	return nil
}

func mergeFile(v *viper.Viper, path, kind string, src Sources) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", kind, err)
	}
	defer f.Close()
	one := viper.New()
	one.SetConfigType("yaml")
	if err := one.ReadConfig(f); err != nil {
		return fmt.Errorf("config %s %s: %w", kind, path, err)
	}
	keys := one.AllKeys()
	sort.Strings(keys)
	for _, k := range keys {
		k = mapKey(k)
		if _, ok := defaults[k]; !ok {
			return fmt.Errorf("config %s %s: unknown key %q", kind, path, k)
		}
		src[k] = Source{Kind: kind, Where: path}
	}
	if err := v.MergeConfigMap(one.AllSettings()); err != nil {
		return fmt.Errorf("config %s %s: %w", kind, path, err)
	}
	return nil
}

// mapKey folds a key inside a map-valued setting ("export.otlp.headers.x")
// to that setting's key: its sub-keys are the user's, not ours.
func mapKey(k string) string {
	for key, def := range defaults {
		if _, ok := def.(map[string]string); ok && strings.HasPrefix(k, key+".") {
			return key
		}
	}
	return k
}

// Validate checks every value and names the key and value of each bad
// one, so that one failed start lists every mistake. The steps run in a
// fixed order, which is the order of the messages.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, c.validateDaemon()...)
	errs = append(errs, c.Discovery.validate()...)
	errs = append(errs, c.Freeze.validate()...)
	errs = append(errs, c.validateCapture()...)
	errs = append(errs, c.API.validate()...)
	errs = append(errs, c.Capture.validateCoreAndLoop()...)
	errs = append(errs, c.validateRingBuffers()...)
	errs = append(errs, c.Report.validate()...)
	errs = append(errs, c.MapOps.validate()...)
	errs = append(errs, c.Export.validate()...)
	errs = append(errs, c.validateStore()...)
	return errors.Join(errs...)
}

// configErrors collects the bad values of a validate step, each message
// naming the key and the value the same way ("config key=value: why").
type configErrors []error

func (errs *configErrors) bad(key string, val any, why string) {
	*errs = append(*errs, fmt.Errorf("config %s=%v: %s", key, val, why))
}

// validateDaemon checks the daemon's own top-level keys: where its socket
// and state live (absolute paths) and its log level.
func (c Config) validateDaemon() []error {
	var errs configErrors
	if !filepath.IsAbs(c.Socket) {
		errs.bad("socket", c.Socket, "must be an absolute path")
	}
	if !filepath.IsAbs(c.StateDir) {
		errs.bad("state_dir", c.StateDir, "must be an absolute path")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs.bad("log_level", c.LogLevel, "must be debug, info, warn or error")
	}
	return errs
}

// validate checks discovery.*: how often and how widely binaries are
// looked for, how long the exec gate may hold an exec, and the include and
// exclude globs. exec_ring_buffer_bytes is checked with the other ring
// buffer (validateRingBuffers).
func (d DiscoveryConfig) validate() []error {
	var errs configErrors
	if d.Rescan < 100*time.Millisecond {
		errs.bad("discovery.rescan", d.Rescan, "must be at least 100ms")
	}
	if d.MaxBinaries < 1 || d.MaxBinaries > 1<<20 {
		errs.bad("discovery.max_binaries", d.MaxBinaries, "must be between 1 and 1048576")
	}
	if d.Workers < 1 || d.Workers > 64 {
		errs.bad("discovery.workers", d.Workers, "must be between 1 and 64")
	}
	if dl := d.ExecGate.Deadline; dl < time.Millisecond || dl > 10*time.Second {
		errs.bad("discovery.exec_gate.deadline", dl, "must be between 1ms and 10s (every exec of a new binary waits up to this long)")
	}
	for _, p := range append(append([]string{}, d.Include...), d.Exclude...) {
		if !validGlob(p) {
			errs.bad("discovery.include/exclude", p, "not a valid glob")
		}
	}
	return errs
}

// validate checks how a crashing process is held: the freeze budget, the
// hold mode, the probe's own wait and waiters, and the daemon's priority.
// freeze.stop_wait is checked with the capture (validateCapture), whose
// wait it bounds.
func (f FreezeConfig) validate() []error {
	var errs configErrors
	if f.Max < time.Millisecond || f.Max > 5*time.Minute {
		errs.bad("freeze.max", f.Max, "must be between 1ms and 5m")
	}
	if f.Hold != HoldPtrace && f.Hold != HoldSigstop {
		errs.bad("freeze.hold", f.Hold, "must be ptrace or sigstop")
	}
	if f.ProbeWait < time.Millisecond || f.ProbeWait > 5*time.Second {
		errs.bad("freeze.probe_wait", f.ProbeWait, "must be between 1ms and 5s")
	}
	if f.ProbeWaiters < 0 || f.ProbeWaiters > 1024 {
		errs.bad("freeze.probe_waiters", f.ProbeWaiters, "must be between 0 (sixteen per CPU) and 1024")
	}
	if f.Nice < -20 || f.Nice > 19 {
		errs.bad("freeze.nice", f.Nice, "must be between -20 and 19")
	}
	if f.RealTime < 0 || f.RealTime > 99 {
		errs.bad("freeze.realtime", f.RealTime, "must be between 0 (off) and 99")
	}
	return errs
}

// validateCapture checks the capture of frozen processes: how many are
// copied and handled at once, how long it waits for every thread to stop
// (freeze.stop_wait), how much memory it may read, and the test-only
// holds, which must end inside the freeze budget (freeze.max).
func (c Config) validateCapture() []error {
	var errs configErrors
	if c.Capture.Workers < 1 || c.Capture.Workers > 256 {
		errs.bad("capture.workers", c.Capture.Workers, "must be between 1 and 256")
	}
	if c.Capture.Sessions < 1 || c.Capture.Sessions > 4096 {
		errs.bad("capture.sessions", c.Capture.Sessions, "must be between 1 and 4096")
	}
	if c.Freeze.StopWait <= 0 {
		errs.bad("freeze.stop_wait", c.Freeze.StopWait, "must be positive (the wait ends at freeze.max anyway)")
	}
	if c.Capture.MaxBytes < 1<<20 {
		errs.bad("capture.max_bytes", c.Capture.MaxBytes, "must be at least 1 MiB")
	}
	if c.Capture.DebugHold < 0 || (c.Capture.DebugHold > 0 && c.Capture.DebugHold >= c.Freeze.Max) {
		errs.bad("capture.debug_hold", c.Capture.DebugHold, "must be below freeze.max")
	}
	if c.Capture.DebugBlockEventsAfter < 0 {
		errs.bad("capture.debug_block_events_after", c.Capture.DebugBlockEventsAfter, "must not be negative")
	}
	return errs
}

// validate checks api.group and api.write_group: each names a group (as
// useradd would accept) or a gid, or is empty for root only.
func (a APIConfig) validate() []error {
	var errs configErrors
	for key, g := range map[string]string{"api.group": a.Group, "api.write_group": a.WriteGroup} {
		if g != "" && !validGroup(g) {
			errs.bad(key, g, "must be a group name or a numeric gid")
		}
	}
	return errs
}

// validateCoreAndLoop checks the two caps on what repeated crashes cost:
// the core files written while frozen (size of one, how many are kept)
// and the crash-loop budget (full captures per interval).
func (cc CaptureConfig) validateCoreAndLoop() []error {
	var errs configErrors
	if cc.Core.MaxBytes < 1<<20 {
		errs.bad("capture.core.max_bytes", cc.Core.MaxBytes, "must be at least 1 MiB")
	}
	if cc.Loop.MaxFull < 1 {
		errs.bad("capture.loop.max_full", cc.Loop.MaxFull, "must be at least 1")
	}
	if cc.Loop.Interval < time.Second {
		errs.bad("capture.loop.interval", cc.Loop.Interval, "must be at least 1s")
	}
	if cc.Core.Keep < 1 {
		errs.bad("capture.core.keep", cc.Core.Keep, "must be at least 1")
	}
	return errs
}

// validateRingBuffers checks both BPF ring buffers (crash events and exec
// events) with one rule: the kernel takes a ring buffer size only as a
// power of two and a whole number of pages.
func (c Config) validateRingBuffers() []error {
	var errs configErrors
	for _, r := range []struct {
		key   string
		bytes int64
	}{{"capture.ring_buffer_bytes", c.Capture.RingBufferBytes}, {"discovery.exec_ring_buffer_bytes", c.Discovery.ExecRingBufferBytes}} {
		if r.bytes < 4096 || r.bytes > 1<<30 || r.bytes&(r.bytes-1) != 0 {
			errs.bad(r.key, r.bytes, "must be a power of two from 4096 to 1 GiB")
		}
	}
	return errs
}

// validate checks report.*: at least one report is kept.
func (r ReportConfig) validate() []error {
	var errs configErrors
	if r.Retain < 1 {
		errs.bad("report.retain", r.Retain, "must be at least 1")
	}
	return errs
}

// validate checks mapops.*: a known mode, an on-crash window of at least a
// second, valid globs, and in mode always at least one glob, because
// arming every Go program would slow every map write.
func (m MapOpsConfig) validate() []error {
	var errs configErrors
	switch m.Mode {
	case MapOpsOff, MapOpsOnCrash, MapOpsAlways:
	default:
		errs.bad("mapops.mode", m.Mode, "must be off, on-crash or always")
	}
	if m.OnCrashFor < time.Second {
		errs.bad("mapops.on_crash_for", m.OnCrashFor, "must be at least 1s")
	}
	for _, p := range m.Always {
		if !validGlob(p) {
			errs.bad("mapops.always", p, "not a valid glob")
		}
	}
	if m.Mode == MapOpsAlways && len(m.Always) == 0 {
		errs.bad("mapops.always", "[]", "mode always needs at least one executable glob (arming every Go program would slow every map write ~90x)")
	}
	return errs
}

// validGlob accepts an executable path glob: a filepath.Match pattern,
// optionally ending in "/**" for a whole directory.
func validGlob(p string) bool {
	_, err := filepath.Match(strings.TrimSuffix(p, "/**"), "")
	return err == nil
}

// validGroup accepts what useradd accepts as a group name, or a gid.
func validGroup(g string) bool {
	for i, r := range g {
		switch {
		case r >= 'a' && r <= 'z', r == '_', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9', r == '-', r == '.', r == '$' && i == len(g)-1:
		default:
			return false
		}
	}
	return len(g) <= 32
}
