// Package integration holds mapsentry's end-to-end tests: the real daemon
// binary, real BPF, real crashing Go processes built with every supported
// toolchain. All of them are privileged: they skip without root, and fail
// under MAPSENTRY_REQUIRE_PRIVILEGED=1.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/report"
)

// env is what every test in this package shares: the daemon binary and the
// victims, built once.
type env struct {
	dir       string
	mapsentry string
	mu        sync.Mutex
	victims   map[string]string
}

var shared *env // set once in TestMain, read-only afterwards

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mapsentry-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = &env{dir: dir, victims: map[string]string{}}
	shared.mapsentry = filepath.Join(dir, "mapsentry")
	build := exec.Command("go", "build", "-o", shared.mapsentry, "../cmd/mapsentry")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build mapsentry: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// variant is one way to build the crash victim.
type variant struct {
	name      string // also the file name, so the daemon scope can match it
	toolchain string
	stripped  bool
	goVersion string // prefix of runtime.Version()
	layout    string
}

var variants = []variant{
	{"go126", "go1.26", false, "go1.26", "swiss"},
	{"go126s", "go1.26", true, "go1.26", "swiss"},
	{"go119", "go1.19", false, "go1.19", "classic"},
	{"go127", "go1.27", false, "go1.27.3", "swiss"},
	{"go126pies", "go1.26", true, "go1.26", "swiss"},
}

// pie says the variant is built with -buildmode=pie (loaded at a random
// base under ASLR): its name says so.
func (v variant) pie() bool { return strings.Contains(v.name, "pie") }

// victim builds (once) the crash victim for v into dir/bin/NAME.
func (e *env) victim(t *testing.T, v variant) string {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.victims[v.name]; ok {
		return p
	}
	out := filepath.Join(e.dir, "bin", v.name)
	var extra []string
	if v.stripped {
		extra = append(extra, "-ldflags=-s -w")
	}
	if v.pie() {
		extra = append(extra, "-buildmode=pie")
	}
	src, _ := filepath.Abs("../testdata/victims/crash")
	testenv.BuildGo(t, src, v.toolchain, out, nil, extra...)
	e.victims[v.name] = out
	return out
}

// daemon is a running `mapsentry daemon` subprocess with its own socket,
// state dir and scope.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	socket string
	state  string
	run    string // runtime_dir: frozen records, spool
	env    []string
	log    *bytes.Buffer
	c      *client.Client
	done   chan struct{}
	// main is the daemon process when cmd is a wrapper that does not pass
	// signals on (unshare --fork); nil: cmd's own process.
	main *os.Process
}

// startDaemon starts a daemon scoped to scopeDir. stateDir may be reused
// across restarts; "" makes a new one.
func startDaemon(t *testing.T, scopeDir, stateDir string, extraEnv ...string) *daemon {
	t.Helper()
	return startDaemonIn(t, nil, scopeDir, stateDir, extraEnv...)
}

// startDaemonIn is startDaemon with the daemon started through wrapper, a
// command line ending where the daemon's begins (e.g. unshare ... --).
func startDaemonIn(t *testing.T, wrapper []string, scopeDir, stateDir string, extraEnv ...string) *daemon {
	t.Helper()
	d := newDaemonIn(t, wrapper, scopeDir, stateDir, extraEnv...)
	if !d.launch(t) {
		t.Fatalf("daemon exited at start-up:\n%s", d.logText())
	}
	return d
}

// newDaemon prepares a daemon scoped to scopeDir without starting it. Its
// runtime directory (frozen records, spool) sits beside the state dir, and
// its instance name is derived from it: a daemon restarted on the same
// state dir finds what the previous one left, and daemons of different
// tests (and worktrees) never share an instance lock.
func newDaemon(t *testing.T, scopeDir, stateDir string, extraEnv ...string) *daemon {
	t.Helper()
	return newDaemonIn(t, nil, scopeDir, stateDir, extraEnv...)
}

// newDaemonIn is newDaemon, started through wrapper (startDaemonIn).
func newDaemonIn(t *testing.T, wrapper []string, scopeDir, stateDir string, extraEnv ...string) *daemon {
	t.Helper()
	testenv.RequirePrivileged(t)
	base := t.TempDir()
	if stateDir == "" {
		stateDir = filepath.Join(base, "state")
	}
	d := &daemon{
		t: t, socket: filepath.Join(base, "mapsentry.sock"), state: stateDir, run: stateDir + "-run",
		log: &bytes.Buffer{}, done: make(chan struct{}),
	}
	d.env = append([]string{
		"MAPSENTRY_SOCKET=" + d.socket,
		"MAPSENTRY_STATE_DIR=" + d.state,
		"MAPSENTRY_RUNTIME_DIR=" + d.run,
		"MAPSENTRY_INSTANCE=" + testInstance(stateDir),
		"MAPSENTRY_DISCOVERY_INCLUDE=" + scopeDir + "/**",
		"MAPSENTRY_DISCOVERY_RESCAN=500ms",
		"MAPSENTRY_CONFIG=" + filepath.Join(base, "none.yaml"),
		"MAPSENTRY_LOG_LEVEL=debug",
		// Tests that want traces enable export towards their own Jaeger.
		"MAPSENTRY_EXPORT_ENABLED=false",
		// Tests crash one binary many times a minute on purpose: the
		// crash-loop budget would count most of them only (TestCrashLoop
		// sets its own).
		"MAPSENTRY_CAPTURE_LOOP_MAX_FULL=100000",
	}, extraEnv...)
	os.WriteFile(filepath.Join(base, "none.yaml"), []byte("{}\n"), 0o644)
	argv := append(append([]string{}, wrapper...), shared.mapsentry, "daemon")
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = append(os.Environ(), d.env...)
	return d
}

// testInstance is the instance name of a test daemon on stateDir.
func testInstance(stateDir string) string {
	h := fnv.New64a()
	h.Write([]byte(stateDir))
	return fmt.Sprintf("test-%016x", h.Sum64())
}

// launch starts d.cmd, stops it at the end of t (logging its output if t
// failed) and waits for its socket to answer. It returns false when the
// daemon exited during start-up instead.
func (d *daemon) launch(t *testing.T) bool {
	t.Helper()
	// One writer for both streams: bytes.Buffer.ReadFrom (which io.Copy
	// uses) holds a stale length across a blocking read, so a second,
	// separate copier into the same buffer gets its output overwritten.
	w := &syncWriter{w: d.log}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop()
		// MAPSENTRY_DAEMON_LOG=1 logs it always (benchmarks, debugging).
		if t.Failed() || os.Getenv("MAPSENTRY_DAEMON_LOG") == "1" {
			t.Logf("daemon log:\n%s", d.logText())
		}
	})
	d.c = client.New(d.socket)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-d.done:
			return false
		default:
		}
		if _, err := d.c.Status(context.Background()); err == nil {
			return true
		}
	}
	t.Fatalf("daemon socket never answered:\n%s", d.logText())
	return false
}

func (d *daemon) logText() string {
	if w, ok := d.cmd.Stderr.(*syncWriter); ok {
		w.mu.Lock()
		defer w.mu.Unlock()
	}
	return d.log.String()
}

// stop ends the daemon gracefully (SIGTERM); it resumes what it froze.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	endWith(d.process(), d.done, syscall.SIGTERM, 15*time.Second)
}

// process is the daemon's own process (not a wrapper's).
func (d *daemon) process() *os.Process {
	if d.main != nil {
		return d.main
	}
	return d.cmd.Process
}

// endWith sends sig to p, waits up to grace for done, then kills p and
// waits for done.
func endWith(p *os.Process, done <-chan struct{}, sig os.Signal, grace time.Duration) {
	p.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		p.Kill()
		<-done
	}
}

// kill ends the daemon with SIGKILL: nothing of it runs afterwards.
func (d *daemon) kill() {
	d.process().Kill()
	<-d.done
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// String is what was written so far, when w is a strings.Builder or a
// bytes.Buffer.
func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.w)
}

// waitAttached waits until the daemon lists pid with probes attached.
func (d *daemon) waitAttached(t *testing.T, pid int) client.Binary {
	t.Helper()
	var found client.Binary
	waitFor(t, 20*time.Second, fmt.Sprintf("probes on pid %d", pid), func() bool {
		bins, err := d.c.PS(context.Background())
		if err != nil {
			return false
		}
		for _, b := range bins {
			for _, p := range b.PIDs {
				if p == pid && len(b.Probes) > 0 {
					found = b
					return true
				}
				if p == pid && b.Error != "" {
					t.Fatalf("pid %d not probed: %s", pid, b.Error)
				}
			}
		}
		return false
	})
	return found
}

// crashOf waits for the crash report of pid, with its exit status recorded.
func (d *daemon) crashOf(t *testing.T, pid int) report.Crash {
	t.Helper()
	var found report.Crash
	seen := false
	deadline := time.Now().Add(20 * time.Second)
	for {
		cs, err := d.c.Crashes(context.Background(), 1000)
		for _, c := range cs {
			if c.Process.PID != pid {
				continue
			}
			found, seen = c, true
			if c.Freeze.Resumed && (c.Freeze.ExitStatus != nil || c.Freeze.ExitSignal != nil) {
				return c
			}
		}
		if time.Now().After(deadline) {
			if seen {
				b, _ := json.Marshal(found.Freeze)
				t.Fatalf("crash report of pid %d: not resumed or no exit status after 20s: freeze %s, errors %v", pid, b, found.Capture.Errors)
			}
			t.Fatalf("no crash report of pid %d after 20s (%v)", pid, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// victim is a running victim process.
type victim struct {
	cmd    *exec.Cmd
	pid    int
	stdin  io.WriteCloser
	stdout *bytes.Buffer
	stderr *bytes.Buffer
	errw   *syncWriter // writes to stderr, under its lock
	done   chan struct{}
	header string
}

// startVictim starts path with args; with "wait" as last arg it blocks until
// release. It always ends up dead and never stopped, whatever the test does.
func startVictim(t *testing.T, path string, args ...string) *victim {
	t.Helper()
	return startVictimWith(t, victimOpts{}, path, args...)
}

// victimOpts: a shared stdin (its EOF releases every victim reading it at
// once; release then does nothing) and more environment.
type victimOpts struct {
	stdin *os.File
	env   []string
	// ownGroup starts it in a process group of its own, as a job-control
	// shell does: its parent may see a stop.
	ownGroup bool
}

func startVictimWith(t *testing.T, o victimOpts, path string, args ...string) *victim {
	t.Helper()
	v := &victim{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	v.cmd = exec.Command(path, args...)
	v.cmd.Env = append(append(os.Environ(), "GOTRACEBACK=single"), o.env...)
	pr, pw := io.Pipe()
	v.cmd.Stdout = io.MultiWriter(v.stdout, pw)
	v.errw = &syncWriter{w: v.stderr}
	v.cmd.Stderr = v.errw
	var err error
	if o.stdin != nil {
		v.cmd.Stdin = o.stdin
	} else if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if o.ownGroup {
		v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start victim: %v", err)
	}
	v.pid = v.cmd.Process.Pid
	go func() { v.cmd.Wait(); pw.Close(); close(v.done) }()
	t.Cleanup(func() {
		select {
		case <-v.done:
		default:
			syscall.Kill(v.pid, syscall.SIGCONT)
			v.cmd.Process.Kill()
			<-v.done
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil && !strings.HasPrefix(strings.Join(args, " "), "ok") {
		t.Fatalf("victim header: %v (stderr %q)", err, v.stderr.String())
	}
	go io.Copy(io.Discard, pr)
	v.header = strings.TrimSpace(line)
	return v
}

func (v *victim) release() {
	if v.stdin != nil {
		io.WriteString(v.stdin, "go\n")
		v.stdin.Close()
	}
}

// wait waits for the victim to exit and returns its exit code.
func (v *victim) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-v.done:
	case <-time.After(timeout):
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(v.pid) + "/stat")
		t.Fatalf("victim %d still running after %s: %s", v.pid, timeout, st)
	}
	return v.cmd.ProcessState.ExitCode()
}

// waitRace waits for a racing victim to die. A race on a map can also
// leave it looping forever in the runtime's map code (a lookup probing a
// table the race filled; seen once in ~2,000 crashes, Go 1.27 stripped),
// which no fatal error ends. That is the victim's fate, not mapsentry's:
// when the victim is still running (not stopped) at the timeout, waitRace
// sends SIGQUIT (the runtime prints where every goroutine is), kills it
// and returns livelocked with that traceback's head. A victim left
// stopped fails the test: that would be a freeze never resumed.
func (v *victim) waitRace(t *testing.T, timeout time.Duration) (code int, livelock string) {
	t.Helper()
	select {
	case <-v.done:
		return v.cmd.ProcessState.ExitCode(), ""
	case <-time.After(timeout):
	}
	if st := v.state(); st == 'T' || st == 't' {
		t.Fatalf("victim %d still stopped (state %c) after %s", v.pid, st, timeout)
	}
	endWith(v.cmd.Process, v.done, syscall.SIGQUIT, 5*time.Second)
	tb := v.stderr.String()
	if len(tb) > 2000 {
		tb = tb[:2000]
	}
	return -1, fmt.Sprintf("no fatal error within %s; SIGQUIT traceback: %s", timeout, tb)
}

// state returns the victim's process state letter.
func (v *victim) state() byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(v.pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// envCount is the positive count in the environment variable name, or def
// when it is unset (benchmarks raise the suite's small counts).
func envCount(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive count", name, s)
	}
	return n
}

// stderrLen is how many bytes the victim has written to stderr so far.
func (v *victim) stderrLen() int {
	v.errw.mu.Lock()
	defer v.errw.mu.Unlock()
	return v.stderr.Len()
}

// allThreads reports whether every thread of the victim is in state st
// ('t': a ptrace-stop; 'T': a group stop).
func (v *victim) allThreads(st byte) bool {
	states, err := procmem.ThreadStates(v.pid)
	if err != nil || len(states) == 0 {
		return false
	}
	for _, s := range states {
		if s != st {
			return false
		}
	}
	return true
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// printedGoroutine is N in the first "goroutine N [" line of a traceback.
func printedGoroutine(stderr string) (int64, error) {
	for _, line := range strings.Split(stderr, "\n") {
		if rest, ok := strings.CutPrefix(line, "goroutine "); ok {
			if i := strings.IndexByte(rest, ' '); i > 0 {
				return strconv.ParseInt(rest[:i], 10, 64)
			}
		}
	}
	return 0, errors.New("no goroutine header in traceback")
}

// firstLine is the first line of the runtime's crash output.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func init() {
	if runtime.GOOS != "linux" {
		panic("integration tests need Linux")
	}
}
