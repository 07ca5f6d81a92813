package integration

// A real systemd to test the installed service under (issue 15): this
// machine's PID 1 is not systemd, so the tests boot one with
// systemd-nspawn from a Debian bookworm tree that `make deps` builds once
// (scripts/nspawn-rootfs.sh) and every run reuses untouched: the container
// boots an overlay of it, with `make install DESTDIR=` output and the
// test's victims as the top read-only layer and a throw-away upper layer.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/report"
)

// testDir is where the victims and their input FIFOs live in the container.
const testDir = "/srv/mapsentry-test"

// nspawnRootfs is the cached root file system (scripts/nspawn-rootfs.sh).
func nspawnRootfs(t *testing.T) string {
	t.Helper()
	p := os.Getenv("MAPSENTRY_NSPAWN_ROOTFS")
	if p == "" {
		var err error
		if p, err = filepath.Abs("../.cache/nspawn/bookworm"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(p, "usr/lib/systemd/systemd")); err != nil {
		testenv.Unavailable(t, "no Debian root file system with systemd at "+p+
			" (make deps builds it once: scripts/nspawn-rootfs.sh; MAPSENTRY_NSPAWN_ROOTFS overrides the path)")
	}
	return p
}

// container is a booted systemd in systemd-nspawn.
type container struct {
	t    *testing.T
	root string // host path of the container's /
	init int    // host PID of the container's systemd
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncWriter
}

// bootContainer installs mapsentry with `make install DESTDIR=` into a
// stage, adds the test's victims and users, boots systemd on an overlay of
// the cached rootfs and waits until it is running. Everything is undone at
// the end of t.
func bootContainer(t *testing.T) *container {
	t.Helper()
	testenv.RequirePrivileged(t)
	nspawn := requireTool(t, "systemd-nspawn")
	requireTool(t, "nsenter")
	requireTool(t, "make")
	rootfs := nspawnRootfs(t)
	base, err := os.MkdirTemp("", "mapsentry-nspawn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	stage, upper, work, root := filepath.Join(base, "stage"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "root")
	for _, d := range []string{stage, upper, work, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// What an operator runs, into the stage.
	install := exec.Command("make", "-s", "-C", "..", "install", "DESTDIR="+stage, "NOBUILD=1", "BIN="+shared.mapsentry)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("make install DESTDIR=%s: %v\n%s", stage, err, out)
	}
	for _, d := range []string{"bin", "fifo"} {
		if err := os.MkdirAll(filepath.Join(stage, testDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, shared.victim(t, variants[0]), filepath.Join(stage, testDir, "bin", variants[0].name), 0o755)
	// Two users for the socket's access rules: an SRE in group mapsentry,
	// and one outside it. Read after the unit's own snippet (name order).
	writeFile(t, filepath.Join(stage, "usr/lib/sysusers.d/zz-mapsentry-test.conf"),
		"u sre - \"test SRE in group mapsentry\"\nm sre mapsentry\nu outsider - \"test user outside group mapsentry\"\n")

	opts := "lowerdir=" + stage + ":" + rootfs + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		t.Fatalf("mount the overlay of %s: %v", rootfs, err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })

	c := &container{t: t, root: root, done: make(chan struct{}), log: &syncWriter{w: &bytes.Buffer{}}}
	// What BPF needs granted to the container, no more: CAP_BPF and
	// CAP_PERFMON (nspawn's default set has the others the unit uses),
	// and bpf() and perf_event_open() through nspawn's own seccomp filter
	// (docs/install.md). The host is cgroup-hybrid; a pure cgroup2
	// container avoids systemd's v1 complaints.
	c.cmd = exec.Command(nspawn, "--directory="+root, "--boot", "--register=no", "--keep-unit",
		"--console=read-only", "--machine=mapsentry-test-"+strconv.Itoa(os.Getpid()),
		"--capability=CAP_BPF,CAP_PERFMON", "--system-call-filter=bpf perf_event_open")
	c.cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	booted := time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.poweroff)
	// nspawn's first child is a short-lived helper that forks the
	// container's PID 1: wait for the child that runs systemd.
	waitFor(t, 30*time.Second, "the container's systemd", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.cmd.Process.Pid, c.cmd.Process.Pid))
		if f := strings.Fields(string(b)); err == nil && len(f) == 1 {
			comm, _ := os.ReadFile("/proc/" + f[0] + "/comm")
			if strings.TrimSpace(string(comm)) == "systemd" {
				c.init, _ = strconv.Atoi(f[0])
			}
		}
		return c.init != 0
	})
	// PID 1 runs before it has said it is systemd (/run/systemd/system:
	// "offline" until then) and before its bus answers: ask until it does.
	var state string
	waitFor(t, 60*time.Second, "the container's systemd to answer", func() bool {
		state, err = c.run("systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(state)
		return state != "offline" && !strings.Contains(state, "Failed to connect to bus")
	})
	if state != "running" {
		failed, _ := c.run("systemctl", "--failed", "--no-legend")
		t.Fatalf("container systemd is %q (%v), failed units:\n%s\nconsole:\n%s", state, err, failed, c.logText())
	}
	t.Logf("systemd booted in the container in %s (rootfs %s, reused)", time.Since(booted).Round(time.Millisecond), rootfs)
	return c
}

// in returns c for use in t, a subtest: helpers fail t, not the test that
// booted the container.
func (c *container) in(t *testing.T) *container {
	cc := *c
	cc.t = t
	return &cc
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (c *container) logText() string {
	c.log.mu.Lock()
	defer c.log.mu.Unlock()
	return c.log.w.(*bytes.Buffer).String()
}

// poweroff shuts the container down (SIGRTMIN+4 to its systemd: a clean
// poweroff, every process ends), or kills its PID namespace.
func (c *container) poweroff() {
	if c.init == 0 {
		c.cmd.Process.Kill()
		<-c.done
		return
	}
	// SIGRTMIN+4: glibc's SIGRTMIN is 34.
	syscall.Kill(c.init, syscall.Signal(34+4))
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		// Killing its PID 1 kills every process of the namespace.
		syscall.Kill(c.init, syscall.SIGKILL)
		c.cmd.Process.Kill()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.t.Errorf("systemd-nspawn (pid %d) did not end", c.cmd.Process.Pid)
		}
	}
	if c.t.Failed() {
		c.t.Logf("container console:\n%s", c.logText())
	}
}

// run runs a command inside the container: its namespaces, as root, with a
// clean environment. nsenter keeps the host's capabilities and no seccomp
// filter: programs under test are started with systemd-run instead.
func (c *container) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(c.init), "--all", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
		"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must is run, failing the test on error.
func (c *container) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("in the container: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// show reads unit properties (systemctl show).
func (c *container) show(unit string, props ...string) map[string]string {
	c.t.Helper()
	out := c.must("systemctl", "show", unit, "--property="+strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// monotonic reads a unit's *TimestampMonotonic property (CLOCK_MONOTONIC,
// shared with the host).
func (c *container) monotonic(unit, prop string) time.Duration {
	c.t.Helper()
	us, err := strconv.ParseInt(c.show(unit, prop)[prop], 10, 64)
	if err != nil {
		c.t.Fatalf("%s %s: %v", unit, prop, err)
	}
	return time.Duration(us) * time.Microsecond
}

func monotonicNow() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// status is `mapsentry status -o json` inside the container.
func (c *container) status() (*client.Status, error) {
	out, err := c.run("mapsentry", "status", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("mapsentry status: %v: %s", err, out)
	}
	var st client.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("mapsentry status -o json: %v: %s", err, out)
	}
	return &st, nil
}

// crashes is `mapsentry crashes -o json` inside the container.
func (c *container) crashes() []report.Crash {
	c.t.Helper()
	out := c.must("mapsentry", "crashes", "-o", "json")
	var cs []report.Crash
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		c.t.Fatalf("mapsentry crashes -o json: %v\n%s", err, out)
	}
	return cs
}

// setConfig writes (content != "") or removes a file in the container.
func (c *container) setFile(path, content string) {
	c.t.Helper()
	if content == "" {
		if err := os.Remove(filepath.Join(c.root, path)); err != nil && !os.IsNotExist(err) {
			c.t.Fatal(err)
		}
		return
	}
	writeFile(c.t, filepath.Join(c.root, path), content)
}

// waitActive waits until the mapsentry unit is active (running) after
// start number restarts (NRestarts) and returns its properties.
func (c *container) waitActive(restarts int, timeout time.Duration) map[string]string {
	c.t.Helper()
	var p map[string]string
	waitFor(c.t, timeout, fmt.Sprintf("mapsentry active (running) after %d restarts", restarts), func() bool {
		p = c.show("mapsentry", "ActiveState", "SubState", "NRestarts", "MainPID", "StatusText")
		return p["ActiveState"] == "active" && p["SubState"] == "running" && p["NRestarts"] == strconv.Itoa(restarts)
	})
	return p
}

// cvictim is a crash victim run by the container's systemd as a transient
// service. It blocks on its standard input, a FIFO the test holds open,
// until release.
type cvictim struct {
	c      *container
	name   string // unit name, without .service
	pid    int    // MainPID, in the container's PID namespace
	header string // its first line: pid=N map=0x... go=...
	fifo   *os.File
}

func (c *container) startVictim(name, mode string) *cvictim {
	c.t.Helper()
	in := filepath.Join(testDir, "fifo", name)
	if err := unix.Mkfifo(filepath.Join(c.root, in), 0o600); err != nil {
		c.t.Fatal(err)
	}
	// O_RDWR never blocks on a FIFO, and keeps it open for the victim.
	f, err := os.OpenFile(filepath.Join(c.root, in), os.O_RDWR, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { f.Close() })
	c.must("systemd-run", "--unit="+name, "--property=Type=exec", "--property=StandardInput=file:"+in,
		"--", filepath.Join(testDir, "bin", variants[0].name), mode, "wait")
	v := &cvictim{c: c, name: name, fifo: f}
	v.pid, _ = strconv.Atoi(c.show(name, "MainPID")["MainPID"])
	waitFor(c.t, 10*time.Second, "header of victim "+name, func() bool {
		out, _ := c.run("journalctl", "--unit="+name, "--output=cat", "--no-pager")
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "pid=") {
				v.header = line
				return true
			}
		}
		return false
	})
	return v
}

func (v *cvictim) release() {
	v.fifo.WriteString("go\n")
	v.fifo.Close()
}

// exit waits for the victim's end and returns its exit status (-1: killed
// by a signal). A victim that does not end is inspected: stopped is a
// freeze never released.
func (v *cvictim) exit(timeout time.Duration) int {
	v.c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p := v.c.show(v.name, "ActiveState", "ExecMainCode", "ExecMainStatus")
		if p["ActiveState"] == "failed" || p["ActiveState"] == "inactive" {
			if p["ExecMainCode"] != "1" { // CLD_EXITED
				return -1
			}
			st, _ := strconv.Atoi(p["ExecMainStatus"])
			return st
		}
		if time.Now().After(deadline) {
			stat, _ := v.c.run("cat", fmt.Sprintf("/proc/%d/stat", v.pid))
			v.c.t.Fatalf("victim %s (pid %d) still there after %s: %s", v.name, v.pid, timeout, stat)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// attached waits until the daemon lists every victim's pid with probes.
func (c *container) attached(vs ...*cvictim) {
	c.t.Helper()
	want := map[int]bool{}
	for _, v := range vs {
		want[v.pid] = true
	}
	waitFor(c.t, 30*time.Second, fmt.Sprintf("probes on %d victims", len(vs)), func() bool {
		out, err := c.run("mapsentry", "ps", "-o", "json")
		if err != nil {
			return false
		}
		var bins []client.Binary
		if json.Unmarshal([]byte(out), &bins) != nil {
			return false
		}
		n := 0
		for _, b := range bins {
			for _, p := range b.PIDs {
				if want[p] && len(b.Probes) > 0 {
					n++
				}
			}
		}
		return n == len(want)
	})
}

// crashOf waits for the report of pid with its exit status.
func (c *container) crashOf(pid int) report.Crash {
	c.t.Helper()
	var found report.Crash
	waitFor(c.t, 30*time.Second, fmt.Sprintf("crash report of pid %d", pid), func() bool {
		for _, cr := range c.crashes() {
			if cr.Process.PID == pid && cr.Freeze.Resumed && cr.Freeze.ExitStatus != nil {
				found = cr
				return true
			}
		}
		return false
	})
	return found
}
