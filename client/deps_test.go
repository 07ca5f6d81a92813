package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientLinksNoBPF: a program that only talks to the daemon carries no
// BPF: nothing the client imports, directly or not, is bpf, probes or
// cilium/ebpf. Today's chain to watch: a wire type that moves into a
// package importing inspect or probes (keep wire types in apitype).
func TestClientLinksNoBPF(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/mapsentry/mapsentry/bpf", "github.com/mapsentry/mapsentry/probes",
		"github.com/mapsentry/mapsentry/internal/inspect", "github.com/cilium/ebpf",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("package client depends on %s (go list -deps ./client); it must link no BPF", dep)
			}
		}
	}
}
