package daemon

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Unfiltered (this test process), every needed system call reaches the
// kernel and gets the kernel's own answer.
func TestSyscallsReachTheKernel(t *testing.T) {
	for _, c := range syscallChecks(true) {
		if !c.OK && !strings.HasPrefix(c.Detail, "not checked") {
			t.Errorf("%s: %s", c.Name, c.Detail)
		}
	}
}

// A refused probe is not blamed on the kernel, and a missing feature is
// not blamed on permissions: the fixes differ.
func TestFeatureDetail(t *testing.T) {
	missing := featureDetail("BPF ring buffers", fmt.Errorf("map type RingBuf: %w", ebpf.ErrNotSupported), nil)
	if !strings.HasPrefix(missing, "kernel lacks BPF ring buffers") {
		t.Errorf("missing feature: %q", missing)
	}
	for _, errno := range []unix.Errno{unix.EPERM, unix.EACCES} {
		refused := featureDetail("BPF ring buffers", fmt.Errorf("create map: %w", errno), []string{"CAP_BPF"})
		if strings.Contains(refused, "kernel lacks") || !strings.HasPrefix(refused, "permission refused while probing for BPF ring buffers") ||
			!strings.Contains(refused, "not a missing kernel feature") || !strings.Contains(refused, "capabilities missing: CAP_BPF") {
			t.Errorf("%v: %q", errno, refused)
		}
	}
	other := featureDetail("attach cookies", unix.EBADF, nil)
	if strings.Contains(other, "kernel lacks") || strings.Contains(other, "permission") {
		t.Errorf("other error: %q", other)
	}
}
