package daemon

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

func TestNotifierSendsDatagrams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	n, err := newNotifier()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Send("READY=1\nSTATUS=watching 0 Go binaries"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	l.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, err := l.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:k]); got != "READY=1\nSTATUS=watching 0 Go binaries" {
		t.Errorf("datagram %q", got)
	}
}

func TestNotifierAbstractAndAbsent(t *testing.T) {
	name := "mapsentry-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "\x00" + name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	n, err := newNotifier()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Send("WATCHDOG=1"); err != nil {
		t.Fatal(err)
	}
	n.Close()

	t.Setenv("NOTIFY_SOCKET", "")
	n, err = newNotifier()
	if err != nil || n.Send("READY=1") != nil {
		t.Fatalf("without NOTIFY_SOCKET sending must be a silent no-op: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative")
	if _, err := newNotifier(); err == nil {
		t.Error("relative NOTIFY_SOCKET accepted")
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	if d, err := watchdogInterval(); d != 0 || err != nil {
		t.Errorf("unset: %v %v", d, err)
	}
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	if d, err := watchdogInterval(); d != 15*time.Second || err != nil {
		t.Errorf("30s: %v %v, want 15s", d, err)
	}
	t.Setenv("WATCHDOG_PID", "1") // someone else's watchdog
	if d, _ := watchdogInterval(); d != 0 {
		t.Errorf("WATCHDOG_PID of another process: %v, want 0", d)
	}
	t.Setenv("WATCHDOG_PID", "")
	t.Setenv("WATCHDOG_USEC", "soon")
	if _, err := watchdogInterval(); err == nil {
		t.Error("bad WATCHDOG_USEC accepted")
	}
}

func TestPreflightReportsEveryCapability(t *testing.T) {
	checks := Preflight(true)
	names := map[string]bool{}
	for _, c := range checks {
		names[c.Name] = true
		if !c.OK && c.Detail == "" {
			t.Errorf("%s failed without a reason", c.Name)
		}
	}
	for _, n := range CapabilityNames() {
		if !names[n] {
			t.Errorf("no check for %s", n)
		}
	}
	for _, n := range []string{"kernel BTF", "uprobes", "lockdown"} {
		if !names[n] {
			t.Errorf("no check for %s", n)
		}
	}
	// The feature probes load BPF: root (or CAP_BPF) only.
	testenv.RequirePrivileged(t)
	for _, f := range bpf.Features() {
		if !names[f.Name] {
			t.Errorf("no check for the kernel feature %s", f.Name)
		}
	}
}
