package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// setup writes a config file and conf.d snippets into a temp dir, points
// --config at it and returns the flag set.
func setup(t *testing.T, file string, snippets map[string]string, args ...string) *pflag.FlagSet {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "mapsentry.yaml")
	if file != "missing" {
		if file == "" {
			file = "{}\n"
		}
		if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(snippets) > 0 {
		os.Mkdir(filepath.Join(dir, "conf.d"), 0o755)
		for name, body := range snippets {
			if err := os.WriteFile(filepath.Join(dir, "conf.d", name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Only this test's environment counts.
	for _, k := range Keys() {
		t.Setenv(EnvName(k), "")
	}
	t.Setenv("MAPSENTRY_CONFIG", "")
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	Flags(fs)
	if err := fs.Parse(append([]string{"--config", path}, args...)); err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestDefaults(t *testing.T) {
	fs := setup(t, "", nil)
	c, src, err := LoadWithSources(fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Report.Cmdline {
		t.Error("report.cmdline defaults to true; issue 7: no command lines unless enabled")
	}
	if c.Freeze.Max != 2*time.Second || c.Socket != "/run/mapsentry/mapsentry.sock" || c.API.Group != "mapsentry" || c.API.WriteGroup != "" {
		t.Errorf("defaults: %+v", c)
	}
	for _, k := range Keys() {
		if src[k].Kind != SourceDefault {
			t.Errorf("%s: source %v, want default", k, src[k])
		}
	}
}

// TestPrecedence sets log_level (which has a flag) at every layer and
// removes them from the top one by one: flag > env > conf.d > file > default.
func TestPrecedence(t *testing.T) {
	file := "log_level: warn\nfreeze:\n  max: 3s\n"
	snippets := map[string]string{
		"10-a.yaml": "log_level: error\nfreeze:\n  max: 4s\n",
		"20-b.yaml": "freeze:\n  max: 5s\n", // later snippet wins
	}
	type want struct {
		level, levelSrc string
	}
	cases := []struct {
		name     string
		file     string
		snippets map[string]string
		env      string
		flag     bool
		want     want
	}{
		{"flag", file, snippets, "debug", true, want{"info", "flag --log-level"}},
		{"env", file, snippets, "debug", false, want{"debug", "env MAPSENTRY_LOG_LEVEL"}},
		{"conf.d", file, snippets, "", false, want{"error", "conf.d"}},
		{"file", file, nil, "", false, want{"warn", "file"}},
		{"default", "", nil, "", false, want{"info", "default"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.flag {
				args = []string{"--log-level", "info"}
			}
			fs := setup(t, tc.file, tc.snippets, args...)
			if tc.env != "" {
				t.Setenv("MAPSENTRY_LOG_LEVEL", tc.env)
			}
			c, src, err := LoadWithSources(fs)
			if err != nil {
				t.Fatal(err)
			}
			if c.LogLevel != tc.want.level {
				t.Errorf("log_level = %q, want %q", c.LogLevel, tc.want.level)
			}
			if got := src["log_level"].String(); !strings.HasPrefix(got, tc.want.levelSrc) {
				t.Errorf("log_level source = %q, want %q...", got, tc.want.levelSrc)
			}
			if tc.name == "conf.d" {
				if c.Freeze.Max != 5*time.Second || !strings.HasSuffix(src["freeze.max"].Where, "20-b.yaml") {
					t.Errorf("freeze.max = %s from %v, want 5s from 20-b.yaml", c.Freeze.Max, src["freeze.max"])
				}
			}
		})
	}
}

// TestEnvOverridesNestedAndLists covers dotted keys and space-separated lists.
func TestEnvOverridesNestedAndLists(t *testing.T) {
	fs := setup(t, "discovery:\n  include: [/opt/a/**]\n", nil)
	t.Setenv("MAPSENTRY_DISCOVERY_INCLUDE", "/srv/** /usr/local/bin/*")
	t.Setenv("MAPSENTRY_REPORT_CMDLINE", "true")
	c, src, err := LoadWithSources(fs)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Discovery.Include) != 2 || c.Discovery.Include[0] != "/srv/**" {
		t.Errorf("discovery.include = %q", c.Discovery.Include)
	}
	if !c.Report.Cmdline || src["report.cmdline"].Kind != SourceEnv {
		t.Errorf("report.cmdline = %v from %v", c.Report.Cmdline, src["report.cmdline"])
	}
}

// TestInvalidRejectedByName: every bad value is named by its key and value,
// wherever it came from.
func TestInvalidRejectedByName(t *testing.T) {
	cases := []struct {
		file, env, envVal string
		want              string
	}{
		{file: "freeze:\n  max: 500us\n", want: "config freeze.max=500µs: must be between 1ms and 5m"},
		{file: "log_level: loud\n", want: "config log_level=loud"},
		{file: "socket: relative.sock\n", want: "config socket=relative.sock: must be an absolute path"},
		{file: "discovery:\n  rescan: 1ms\n", want: "config discovery.rescan=1ms"},
		{file: "discovery:\n  include: ['/a/[']\n", want: "config discovery.include/exclude=/a/[: not a valid glob"},
		{file: "capture:\n  max_bytes: 10\n", want: "config capture.max_bytes=10"},
		{file: "report:\n  retain: 0\n", want: "config report.retain=0"},
		{file: "api:\n  group: 'a b'\n", want: "config api.group=a b"},
		{file: "freeze:\n  maxx: 2s\n", want: `unknown key "freeze.maxx"`},
		{file: "freeze:\n  max: soon\n", want: "freeze.max"},
		{env: "MAPSENTRY_FREEZE_STOP_WAIT", envVal: "0s", want: "config freeze.stop_wait=0s: must be positive"},
		{env: "MAPSENTRY_FREEZE_HOLD", envVal: "cgroup", want: "config freeze.hold=cgroup: must be ptrace or sigstop"},
		{env: "MAPSENTRY_FREEZE_PROBE_WAITERS", envVal: "-1", want: "config freeze.probe_waiters=-1"},
		{env: "MAPSENTRY_CAPTURE_WORKERS", envVal: "0", want: "config capture.workers=0"},
		{env: "MAPSENTRY_REPORT_RETAIN", envVal: "many", want: "report.retain"},
	}
	for _, tc := range cases {
		fs := setup(t, tc.file, nil)
		if tc.env != "" {
			t.Setenv(tc.env, tc.envVal)
		}
		_, err := Load(fs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("file %q env %s=%s: err = %v, want it to contain %q", tc.file, tc.env, tc.envVal, err, tc.want)
		}
	}
}

func TestUnknownKeyInSnippetNamesFile(t *testing.T) {
	fs := setup(t, "", map[string]string{"50-typo.yaml": "report:\n  cmdlines: true\n"})
	_, err := Load(fs)
	if err == nil || !strings.Contains(err.Error(), "50-typo.yaml") || !strings.Contains(err.Error(), "report.cmdlines") {
		t.Fatalf("err = %v, want the snippet and the key named", err)
	}
}

func TestExplicitMissingFileIsAnError(t *testing.T) {
	fs := setup(t, "missing", nil)
	if _, err := Load(fs); err == nil {
		t.Fatal("an explicitly named config file that does not exist must be an error")
	}
}

func TestSettingsCoverEveryKey(t *testing.T) {
	fs := setup(t, "freeze:\n  max: 3s\n", nil)
	c, src, err := LoadWithSources(fs)
	if err != nil {
		t.Fatal(err)
	}
	set := c.Settings(src)
	if len(set) != len(Keys()) {
		t.Fatalf("%d settings for %d keys", len(set), len(Keys()))
	}
	for _, s := range set {
		if s.Key == "freeze.max" && (s.Value != "3s" || s.Kind != SourceFile) {
			t.Errorf("freeze.max: %+v", s)
		}
	}
}
