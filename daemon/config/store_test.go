package config

import (
	"strings"
	"testing"
)

func TestStoreAndInstanceConfig(t *testing.T) {
	c, err := Load(setup(t, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Instance != DefaultInstance || c.RuntimeDir() != "/run/mapsentry" || c.FrozenDir() != "/run/mapsentry/frozen" ||
		c.SpoolDir() != "/run/mapsentry/spool" || c.Store.QueueMax != 256 || c.Store.SpoolMaxFiles != 1000 {
		t.Errorf("defaults: instance %q runtime %q frozen %q spool %q store %+v",
			c.Instance, c.RuntimeDir(), c.FrozenDir(), c.SpoolDir(), c.Store)
	}
	// The runtime directory follows the socket unless set.
	c, err = Load(setup(t, "socket: /tmp/t1/api.sock\nstore:\n  spool_dir: /var/spool/ms\n", nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.RuntimeDir() != "/tmp/t1" || c.SpoolDir() != "/var/spool/ms" {
		t.Errorf("runtime %q spool %q", c.RuntimeDir(), c.SpoolDir())
	}
	c, err = Load(setup(t, "runtime_dir: /run/other\n", nil))
	if err != nil || c.FrozenDir() != "/run/other/frozen" || c.SpoolDir() != "/run/other/spool" {
		t.Errorf("runtime_dir set: frozen %q spool %q, %v", c.FrozenDir(), c.SpoolDir(), err)
	}

	for file, want := range map[string]string{
		"instance: 'a b'\n":                              "config instance=a b",
		"instance: " + strings.Repeat("x", 65) + "\n":    "config instance=",
		"runtime_dir: run\n":                             "config runtime_dir=run",
		"store:\n  spool_dir: spool\n":                   "config store.spool_dir=spool",
		"store:\n  queue_max: 0\n":                       "config store.queue_max=0",
		"store:\n  queue_max_bytes: 10\n":                "config store.queue_max_bytes=10",
		"store:\n  spool_max_files: -1\n":                "config store.spool_max_files=-1",
		"store:\n  retry_initial: 1ms\n":                 "config store.retry_initial=1ms",
		"store:\n  retry_initial: 2s\n  retry_max: 1s\n": "config store.retry_max=1s",
	} {
		if _, err := Load(setup(t, file, nil)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want it to contain %q", file, err, want)
		}
	}
}
