// Package benchenv owns what the discovery benchmarks share: the mapsentry
// binary built from this tree, a daemon scoped to one directory with its
// own socket and state, its discovery status, its CPU time and memory,
// percentiles, and the machine line every figure is written with.
// Benchmark-only.
package benchenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/client"
)

// BuildMapsentry builds cmd/mapsentry (from a package under bench/) into
// a temporary directory.
func BuildMapsentry(tb testing.TB) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "mapsentry")
	if b, err := exec.Command("go", "build", "-o", out, "../../cmd/mapsentry").CombinedOutput(); err != nil {
		tb.Fatalf("build mapsentry: %v\n%s", err, b)
	}
	return out
}

// Daemon is a running `mapsentry daemon` scoped to one directory.
type Daemon struct {
	Cmd  *exec.Cmd
	C    *client.Client
	PID  int
	log  *lockedBuffer
	done chan struct{}
}

// StartDaemon starts ms as a daemon that probes only binaries under scope,
// with its own socket and state directory, and waits until it answers.
// env adds MAPSENTRY_* settings. It is stopped at the end of tb.
func StartDaemon(tb testing.TB, ms, scope string, env ...string) *Daemon {
	tb.Helper()
	tmp := tb.TempDir()
	cfg := filepath.Join(tmp, "none.yaml")
	os.WriteFile(cfg, []byte("{}\n"), 0o644)
	sock := filepath.Join(tmp, "sock")
	d := &Daemon{log: &lockedBuffer{}, done: make(chan struct{})}
	d.Cmd = exec.Command(ms, "daemon")
	// Its own instance name and runtime directory (the defaults are
	// host-wide: one daemon per host), and no crash-loop budget (a bench
	// crashes on purpose).
	d.Cmd.Env = append(append(os.Environ(), "MAPSENTRY_SOCKET="+sock, "MAPSENTRY_STATE_DIR="+filepath.Join(tmp, "state"),
		"MAPSENTRY_RUNTIME_DIR="+filepath.Join(tmp, "run"), "MAPSENTRY_INSTANCE=bench-"+filepath.Base(tmp)+"-"+strconv.Itoa(os.Getpid()),
		"MAPSENTRY_DISCOVERY_INCLUDE="+scope+"/**", "MAPSENTRY_CONFIG="+cfg, "MAPSENTRY_EXPORT_ENABLED=false",
		"MAPSENTRY_CAPTURE_LOOP_MAX_FULL=100000"), env...)
	d.Cmd.Stdout, d.Cmd.Stderr = d.log, d.log
	if err := d.Cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	d.PID = d.Cmd.Process.Pid
	go func() { d.Cmd.Wait(); close(d.done) }()
	tb.Cleanup(func() {
		d.Stop()
		if tb.Failed() {
			tb.Logf("daemon log:\n%s", d.log.String())
		}
	})
	d.C = client.New(sock)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := d.C.Status(context.Background()); err == nil {
			return d
		}
		select {
		case <-d.done:
			tb.Fatalf("daemon exited at start-up:\n%s", d.log.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("daemon did not answer:\n%s", d.log.String())
		}
	}
}

// Log is what the daemon wrote so far.
func (d *Daemon) Log() string { return d.log.String() }

// Stop ends the daemon (SIGTERM, then SIGKILL after 15 s).
func (d *Daemon) Stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.Cmd.Process.Kill()
		<-d.done
	}
}

// Discovery reads the daemon's discovery status.
func (d *Daemon) Discovery(tb testing.TB) apitype.DiscoveryStats {
	tb.Helper()
	st, err := d.C.Status(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return st.Discovery
}

// RequireGate fails tb unless the exec gate is active.
func (d *Daemon) RequireGate(tb testing.TB) {
	tb.Helper()
	g := d.Discovery(tb).Gate
	for deadline := time.Now().Add(20 * time.Second); g.State == "starting" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		g = d.Discovery(tb).Gate // the socket answers before discovery opens the gate
	}
	if g.State != "active" {
		tb.Fatalf("exec gate %s: %s", g.State, g.Reason)
	}
}

// Binaries is `mapsentry ps`.
func (d *Daemon) Binaries(tb testing.TB) []apitype.Binary {
	tb.Helper()
	bins, err := d.C.PS(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return bins
}

// CPU is the daemon's user+system CPU time so far.
func (d *Daemon) CPU(tb testing.TB) time.Duration {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(d.PID) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	// utime and stime are fields 14 and 15 of stat: 11 and 12 after ")".
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// ExecTime is the CPU time the daemon's live threads ran so far, to the
// nanosecond (the sum of /proc/PID/task/*/schedstat): over an idle
// minute CPU's 10 ms ticks are too coarse for a 0.1 % bound (6 ticks),
// and the tick sampling is statistical. Threads that exited are not in it
// (an idle daemon's threads do not exit).
func (d *Daemon) ExecTime(tb testing.TB) time.Duration {
	tb.Helper()
	files, err := filepath.Glob("/proc/" + strconv.Itoa(d.PID) + "/task/*/schedstat")
	if err != nil || len(files) == 0 {
		tb.Fatalf("schedstat of %d: %v", d.PID, err)
	}
	var ns int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that just exited
		}
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			v, _ := strconv.ParseInt(fs[0], 10, 64)
			ns += v
		}
	}
	return time.Duration(ns)
}

// Memory returns the daemon's resident set now and at its peak.
func (d *Daemon) Memory(tb testing.TB) (rss, peak int64) {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(d.PID) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}

// Percentile is the p-th percentile (0..100) of xs, nearest rank.
func Percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Machine is the line every figure is written with: CPU model, CPUs and
// the load average now.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	return fmt.Sprintf("%s, %d CPUs, loadavg %s", model, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
