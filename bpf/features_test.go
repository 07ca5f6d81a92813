package bpf

import (
	"testing"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// TestFeaturesOnThisKernel: the kernels this project runs on (Linux 6.6
// and later) have every feature the BPF objects use, so every probe
// passes, and with uprobe_multi the multi programs are loaded.
func TestFeaturesOnThisKernel(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, f := range Features() {
		if f.Name == "" || f.Lacking == "" || f.Probe == nil {
			t.Errorf("feature %+v: name, message and probe are all needed", f)
			continue
		}
		if err := f.Probe(); err != nil {
			t.Errorf("%s: %v (kernel lacks %s)", f.Name, err, f.Lacking)
		}
	}
	if err := HaveUprobeMulti(); err != nil {
		testenv.Unavailable(t, err.Error())
	}
	k, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if _, err := k.CrashMultiProgram(); err != nil {
		t.Errorf("kernel has uprobe_multi links, but: %v", err)
	}
}
