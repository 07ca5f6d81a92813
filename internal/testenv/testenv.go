// Package testenv owns what tests need from the machine: the privileged-test
// gate, building Go victims with a chosen toolchain, starting victims that
// announce themselves with a "ready" line (and never leaving one stopped),
// a bare SIGSTOP uprobe program to stop a process at an exact
// instruction, and failing disks (a small tmpfs to fill, a read-only bind
// mount). Test-only.
package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RequirePrivEnv is the variable CI sets so that a privileged test that
// cannot run fails instead of skipping: a green run that skipped the real
// tests proves nothing.
const RequirePrivEnv = "MAPSENTRY_REQUIRE_PRIVILEGED"

// RequirePrivileged skips t (or fails it under MAPSENTRY_REQUIRE_PRIVILEGED=1)
// unless the test runs as root.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	Unavailable(t, "needs root for real BPF and access to other processes")
}

// Unavailable skips t with reason, or fails it when privileged tests are
// required. Use it for any missing piece a privileged test needs (a
// toolchain, a kernel feature).
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(RequirePrivEnv) == "1" {
		t.Fatalf("%s=1 but this test cannot run: %s", RequirePrivEnv, reason)
	}
	t.Skip(reason)
}

// toolchain returns the go command and environment for a toolchain name.
func toolchain(name string) (goBin string, env []string, ok bool) {
	switch name {
	case "go1.19":
		return "/usr/lib/go-1.19/bin/go", []string{"GOTOOLCHAIN=local"}, true
	case "go1.26":
		return "go", []string{"GOTOOLCHAIN=local"}, true
	case "go1.27":
		return "go", []string{"GOTOOLCHAIN=go1.27.3"}, true
	}
	return "", nil, false
}

// Toolchains lists the names BuildGo accepts, oldest first.
func Toolchains() []string { return []string{"go1.19", "go1.26", "go1.27"} }

// BuildGo builds the main package in dir with the named toolchain ("go1.19",
// "go1.26", "go1.27") into out. extra are more `go build` arguments, e.g.
// "-ldflags=-s -w". env adds variables such as GOEXPERIMENT=mapsplitgroup.
func BuildGo(t testing.TB, dir, tc, out string, env []string, extra ...string) {
	t.Helper()
	goBin, tcEnv, ok := toolchain(tc)
	if !ok {
		t.Fatalf("unknown toolchain %q", tc)
	}
	if filepath.IsAbs(goBin) {
		if _, err := os.Stat(goBin); err != nil {
			Unavailable(t, tc+" not installed at "+goBin+" (make deps installs it)")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{"build", "-o", out}, extra...)
	args = append(args, ".")
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off"), tcEnv...)
	cmd.Env = append(cmd.Env, env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s with %s: %v\n%s", dir, tc, err, strings.TrimSpace(string(b)))
	}
}

// Tool returns the path of the program name, which scripts/deps.sh must
// install (internal/repocheck checks that it has a line for every name
// passed here). Missing, t is skipped, or failed under
// MAPSENTRY_REQUIRE_PRIVILEGED=1.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, name+" not installed (scripts/deps.sh installs it: make deps)")
	}
	return p
}
