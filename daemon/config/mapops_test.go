package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadEnv(t *testing.T, env map[string]string) (Config, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(f, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MAPSENTRY_CONFIG", f)
	for k, v := range env {
		t.Setenv(k, v)
	}
	return Load(nil)
}

func TestMapOpsConfig(t *testing.T) {
	c, err := loadEnv(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MapOps.Mode != MapOpsOff || c.MapOps.OnCrashFor != time.Hour || len(c.MapOps.Always) != 0 {
		t.Fatalf("defaults: %+v", c.MapOps)
	}
	c, err = loadEnv(t, map[string]string{
		"MAPSENTRY_MAPOPS_MODE": "always", "MAPSENTRY_MAPOPS_ALWAYS": "/srv/a/** /usr/bin/b",
		"MAPSENTRY_MAPOPS_ON_CRASH_FOR": "10m",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.MapOps.Mode != MapOpsAlways || len(c.MapOps.Always) != 2 || c.MapOps.OnCrashFor != 10*time.Minute {
		t.Fatalf("from env: %+v", c.MapOps)
	}
	for env, want := range map[string]string{
		"MAPSENTRY_MAPOPS_MODE=sometimes": "mapops.mode=sometimes",
		"MAPSENTRY_MAPOPS_MODE=always":    "mapops.always=[]: mode always needs",
		"MAPSENTRY_MAPOPS_ON_CRASH_FOR=1": "mapops.on_crash_for",
	} {
		t.Run(env, func(t *testing.T) {
			k, v, _ := strings.Cut(env, "=")
			_, err := loadEnv(t, map[string]string{k: v, "MAPSENTRY_MAPOPS_ALWAYS": ""})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want it to name %q", err, want)
			}
		})
	}
}
