package config

import (
	"os"
	"reflect"
	"testing"
)

// TestDeployedConfigIsTheDefaults: the config `make install` puts at
// /etc/mapsentry/mapsentry.yaml sets every key, each to its built-in
// default, so what its first line promises holds, and reading it changes
// nothing. A new key goes into deploy/systemd/mapsentry.yaml too.
func TestDeployedConfigIsTheDefaults(t *testing.T) {
	b, err := os.ReadFile("../../deploy/systemd/mapsentry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	deployed, src, err := LoadWithSources(setup(t, string(b), nil))
	if err != nil {
		t.Fatalf("deploy/systemd/mapsentry.yaml: %v", err)
	}
	for _, k := range Keys() {
		// viper cannot tell an empty map in a file from no map.
		if m, ok := defaults[k].(map[string]string); ok && len(m) == 0 {
			continue
		}
		if src[k].Kind != SourceFile {
			t.Errorf("deploy/systemd/mapsentry.yaml does not set %s (source %v): add it with its default", k, src[k])
		}
	}
	builtin, err := Load(setup(t, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(deployed, builtin) {
		t.Errorf("deploy/systemd/mapsentry.yaml differs from the defaults:\n file     %+v\n defaults %+v", deployed, builtin)
	}
}
