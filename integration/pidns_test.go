package integration

// Issue 13 (child PID namespace): a daemon in a PID namespace of its own
// (a container without the host's PID namespace, `unshare -p`,
// systemd-nspawn) captures the crashes of that namespace's processes with
// the PIDs it sees, and leaves alone every process outside it, even one
// running the very binary it probes.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

// nsDaemon is a daemon started as `unshare --pid --fork --mount-proc`
// does it: PID 1 of a new PID namespace with its own /proc.
func nsDaemon(t *testing.T, scopeDir string) (d *daemon, hostPID int) {
	t.Helper()
	unshare := requireTool(t, "unshare")
	d = startDaemonIn(t, []string{unshare, "--pid", "--fork", "--mount-proc", "--kill-child", "--"}, scopeDir, "")
	// unshare ignores SIGTERM in --fork mode: signal the daemon itself.
	hostPID = onlyChild(t, d.cmd.Process.Pid)
	p, err := os.FindProcess(hostPID)
	if err != nil {
		t.Fatal(err)
	}
	d.main = p
	return d, hostPID
}

// onlyChild is the single child process of pid.
func onlyChild(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("pid %d has children %q, want one", pid, f)
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

func pidNamespaceOf(t *testing.T, pid int) uint32 {
	t.Helper()
	fi, err := os.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatal(err)
	}
	return uint32(fi.Sys().(*syscall.Stat_t).Ino)
}

// startVictimIn starts a victim inside the PID (and mount) namespace of
// hostPID. A shell stands between nsenter and the victim: nsenter, waiting
// with WUNTRACED, stops itself whenever its child stops (and would then
// stay stopped after the freeze is over), while a non-interactive shell
// does not watch for stops. The victim's pid is the one it printed, its
// PID in that namespace.
func startVictimIn(t *testing.T, hostPID int, path string, args ...string) (*victim, int) {
	t.Helper()
	nsenter := requireTool(t, "nsenter")
	v := startVictim(t, nsenter, append([]string{"--target", strconv.Itoa(hostPID), "--pid", "--mount", "--",
		"/bin/sh", "-c", `"$0" "$@"; exit $?`, path}, args...)...)
	for _, f := range strings.Fields(v.header) {
		if s, ok := strings.CutPrefix(f, "pid="); ok {
			pid, err := strconv.Atoi(s)
			if err == nil {
				return v, pid
			}
		}
	}
	t.Fatalf("victim header %q names no pid", v.header)
	return nil, 0
}

func TestChildPIDNamespace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bin")
	os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, variants[0].name)
	copyFile(t, shared.victim(t, variants[0]), path, 0o755)
	d, hostPID := nsDaemon(t, dir)
	ns := pidNamespaceOf(t, hostPID)

	// The scope is said: status, the CLI, the start-up log.
	st, err := d.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Scope.Host || st.Scope.PIDNamespace != ns || !strings.Contains(st.Scope.Description, "only processes of PID namespace") {
		t.Errorf("status scope %+v, want PID namespace %d only", st.Scope, ns)
	}
	if st.PID != 1 {
		t.Errorf("status pid %d, want 1 (as the daemon's namespace numbers it)", st.PID)
	}
	out, _ := cli(t, 0, 0, nil, "--socket="+d.socket, "status")
	if !strings.Contains(out, "scope") || !strings.Contains(out, fmt.Sprintf("pid:[%d]", ns)) {
		t.Errorf("mapsentry status does not show the scope:\n%s", out)
	}
	if !strings.Contains(d.logText(), "running in a child PID namespace") {
		t.Errorf("the start-up log does not say the daemon runs in a child PID namespace")
	}

	// Inside: captured with the namespace's PIDs, complete, exit 2.
	in, inPID := startVictimIn(t, hostPID, path, "writes", "wait")
	d.waitAttached(t, inPID)
	// Outside, the same binary (same inode, so the same probes fire):
	// untouched, it dies at once, and nothing of it reaches the daemon.
	outside := startVictim(t, path, "writes", "wait")
	outside.release()
	if code := outside.wait(t, 30*time.Second); code != 2 {
		t.Errorf("victim outside the namespace: exit status %d, want 2", code)
	}
	if !strings.Contains(outside.stderr.String(), "concurrent map") {
		t.Errorf("victim outside the namespace did not die of its race: %q", firstLine(outside.stderr.String()))
	}
	waitFor(t, 10*time.Second, "the crash hit outside the namespace counted", func() bool {
		st, err := d.c.Status(context.Background())
		if err != nil {
			return false
		}
		return st.Kernel.OtherNamespace > 0
	})

	in.release()
	if code := in.wait(t, 30*time.Second); code != 2 {
		t.Errorf("victim inside the namespace: exit status %d, want 2; stderr %q", code, firstLine(in.stderr.String()))
	}
	cr := d.crashOf(t, inPID)
	if cr.Process.Exe != path || cr.Fatal.Kind != report.KindMapConcurrentWrite {
		t.Errorf("report: exe %q kind %s, want %s %s", cr.Process.Exe, cr.Fatal.Kind, path, report.KindMapConcurrentWrite)
	}
	if !cr.Freeze.AllThreadsStopped || !cr.Freeze.Resumed || cr.Freeze.DeadlineHit || len(cr.Capture.Errors) > 0 {
		t.Errorf("freeze %+v, capture errors %q: want every thread stopped, resumed, no error", cr.Freeze, cr.Capture.Errors)
	}
	if st := cr.Freeze.ExitStatus; st == nil || *st != 2 {
		t.Errorf("recorded exit status %v, want 2", st)
	}
	if len(cr.Goroutines) < 2 {
		t.Errorf("%d goroutines captured, want the crasher and its racing writers", len(cr.Goroutines))
	}
	if !checkMap(t, cr, in.header) {
		t.Errorf("map not located: %+v", cr.Map)
	}
	cs, err := d.c.Crashes(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 {
		t.Errorf("%d reports, want only the one of the victim inside the namespace", len(cs))
	}
	bins, _ := d.c.PS(context.Background())
	for _, b := range bins {
		for _, p := range b.PIDs {
			if p == outside.pid {
				t.Errorf("ps lists the outside victim's host pid %d", p)
			}
		}
	}
	t.Logf("inside: pid %d captured in %s; outside: host pid %d untouched", inPID, time.Duration(cr.Freeze.FrozenNS), outside.pid)

	// selftest inside the daemon's namespace passes; from the host it
	// names the mismatch instead of waiting for a program it cannot see.
	nsenter := requireTool(t, "nsenter")
	inside := runCmd(t, nsenter, "--target", strconv.Itoa(hostPID), "--pid", "--mount", "--",
		shared.mapsentry, "--socket="+d.socket, "selftest")
	if !regexp.MustCompile(`(?m)^selftest\s+PASS`).MatchString(inside) || !strings.Contains(inside, "only processes of PID namespace") {
		t.Errorf("selftest in the daemon's namespace:\n%s", inside)
	}
	host, err := cli(t, 0, 0, nil, "--socket="+d.socket, "selftest")
	if err == nil || !strings.Contains(host, "run selftest in the daemon's namespace") {
		t.Errorf("selftest from the host: %v\n%s", err, host)
	}
	t.Logf("selftest from the host:\n%s", host)

	// A PID the host's CLI names is another process in the daemon's
	// namespace: write routes, which act on PIDs, refuse such a caller.
	out, err = cli(t, 0, 0, nil, "--socket="+d.socket, "dump", "--pid", "1")
	if err == nil || !strings.Contains(out, "another PID namespace") {
		t.Errorf("dump from the host's PID namespace on the daemon's: %v\n%s", err, out)
	}
	t.Logf("dump from the host: %s", strings.TrimSpace(out))
}

// runCmd runs argv and returns its combined output.
func runCmd(t *testing.T, argv ...string) string {
	t.Helper()
	out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out)
}

// TestForeignProcRefused: a daemon in a child PID namespace whose /proc is
// still the host's (`unshare -p -f` without --mount-proc) would look every
// PID up as another process: it refuses to start and names the fix.
func TestForeignProcRefused(t *testing.T) {
	unshare := requireTool(t, "unshare")
	d := newDaemonIn(t, []string{unshare, "--pid", "--fork", "--kill-child", "--"}, t.TempDir(), "")
	if d.launch(t) {
		t.Fatal("daemon started in a child PID namespace with the host's /proc")
	}
	log := d.logText()
	if !strings.Contains(log, "/proc belongs to another PID namespace") || !strings.Contains(log, "--mount-proc") {
		t.Errorf("the daemon's refusal does not say why and how to fix it:\n%s", log)
	}
	t.Logf("refused: %s", lastLine(log))
}
