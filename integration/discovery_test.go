package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/internal/inspect"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

// linkVariants are the crash victim linked the ways distributions and
// users link Go programs: by gcc with cgo (-linkmode=external), PIE,
// -trimpath, stripped and not, on every toolchain (the names say how:
// variant.external, .pie, .trimpath).
var linkVariants = []variant{
	{"go119ext", "go1.19", false, "go1.19", "classic"},
	{"go119extpies", "go1.19", true, "go1.19", "classic"},
	{"go119pietrim", "go1.19", false, "go1.19", "classic"},
	{"go126ext", "go1.26", false, "go1.26", "swiss"},
	{"go126extpies", "go1.26", true, "go1.26", "swiss"},
	{"go126pietrim", "go1.26", false, "go1.26", "swiss"},
	{"go127ext", "go1.27", false, "go1.27.3", "swiss"},
	{"go127extpies", "go1.27", true, "go1.27.3", "swiss"},
	{"go127pietrim", "go1.27", false, "go1.27.3", "swiss"},
}

func (d *daemon) discovery(t *testing.T) apitype.DiscoveryStats {
	t.Helper()
	st, err := d.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Discovery
}

// requireGate fails the test unless the daemon's exec gate is active.
func (d *daemon) requireGate(t *testing.T) {
	t.Helper()
	g := d.gateOpen(t)
	if g.State != "active" {
		t.Fatalf("exec gate %s: %s", g.State, g.Reason)
	}
}

// gateOpen waits until the gate is past starting (the socket answers
// before discovery opens it) and returns its state.
func (d *daemon) gateOpen(t *testing.T) apitype.GateStatus {
	t.Helper()
	var g apitype.GateStatus
	waitFor(t, 20*time.Second, "the exec gate opened or refused", func() bool {
		g = d.discovery(t).Gate
		return g.State != "starting"
	})
	return g
}

// binaryAt returns the ps line of the binary at path, once it has probes.
func (d *daemon) binaryAt(t *testing.T, path string) apitype.Binary {
	t.Helper()
	var found apitype.Binary
	waitFor(t, 20*time.Second, "probes on "+path, func() bool {
		bins, err := d.c.PS(context.Background())
		if err != nil {
			return false
		}
		for _, b := range bins {
			if b.Path == path {
				if b.Error != "" {
					t.Fatalf("%s not probed: %s", path, b.Error)
				}
				found = b
				return len(b.Probes) > 0
			}
		}
		return false
	})
	return found
}

// TestCrashEveryLinkMode: victims linked by gcc with cgo, PIE, -trimpath,
// stripped and not, on Go 1.19, 1.26 and 1.27, race on a map from their
// first instructions (no wait for the daemon: the exec gate holds each
// new binary until its probes are in). Each crash is captured with its
// map, its partner and every goroutine, and dies exactly as without
// mapsentry.
func TestCrashEveryLinkMode(t *testing.T) {
	startDaemonCheck(t)
	if _, err := exec.LookPath("gcc"); err != nil {
		testenv.Unavailable(t, "external linking needs gcc (make deps installs it)")
	}
	paths := map[string]string{}
	for _, v := range linkVariants {
		paths[v.name] = shared.victim(t, v)
	}
	dir := t.TempDir()
	d := startDaemon(t, dir, "")
	d.requireGate(t)
	for _, v := range linkVariants {
		t.Run(v.name, func(t *testing.T) {
			// A fresh inode: never seen by the daemon.
			path := filepath.Join(dir, v.name)
			copyFile(t, paths[v.name], path, 0o755)
			vic := startVictim(t, path, "writes")
			code, livelock := vic.waitRace(t, 60*time.Second)
			if livelock != "" {
				t.Fatalf("victim livelocked: %s", livelock)
			}
			stderr := vic.stderr.String()
			if code != 2 || !mapFatalLine(firstLine(stderr), v.layout) {
				t.Fatalf("exit %d, first line %q", code, firstLine(stderr))
			}
			cr := d.crashOf(t, vic.pid)
			checkReport(t, cr, crashCase{v: v, mode: "writes"}, path, stderr)
			if !checkMap(t, cr, vic.header) {
				t.Errorf("map not located: %+v", cr.Map)
			}
			if !hasPartner(cr, "main.writer") {
				t.Errorf("no main.writer partner: %+v (note %q)", cr.Partners, cr.PartnersNote)
			}
			bins, _ := d.c.PS(context.Background())
			for _, b := range bins {
				if b.Path == path {
					if b.FoundBy != "exec-gate" {
						t.Errorf("found by %s, want exec-gate (held before its first instruction)", b.FoundBy)
					}
					t.Logf("pclntab by %s; probed %s after the exec; %d goroutines, map by %q, %d partners",
						b.PCLNTab.How, time.Duration(b.ProbedAfterNS), len(cr.Goroutines), cr.Map.FoundBy, len(cr.Partners))
				}
			}
		})
	}
}

// TestProbesOutliveTheProcess: a binary's probes stay when no process runs
// it (a program run from cron is not new each time), it is never read
// again, and a binary rewritten in place (same inode, new contents) is
// read again before its next run: probes at the old offsets would land
// mid-instruction.
func TestProbesOutliveTheProcess(t *testing.T) {
	startDaemonCheck(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "cron-job")
	copyFile(t, shared.victim(t, variants[0]), path, 0o755)
	d := startDaemon(t, dir, "")
	vic := startVictim(t, path, "ok")
	if code := vic.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("victim exit %d", code)
	}
	first := d.binaryAt(t, path)
	inspected := d.discovery(t).Inspected
	time.Sleep(2 * time.Second) // four rescans with no process running it

	vic = startVictim(t, path, "writes")
	if code, _ := vic.waitRace(t, 60*time.Second); code != 2 {
		t.Fatalf("re-run: exit %d", code)
	}
	d.crashOf(t, vic.pid)
	again := d.binaryAt(t, path)
	if again.ID != first.ID || d.discovery(t).Inspected != inspected {
		t.Errorf("re-run after idle: binary id %d -> %d, inspected %d -> %d: read again", first.ID, again.ID, inspected, d.discovery(t).Inspected)
	}

	// Rewritten in place: another toolchain's build, same inode.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(shared.victim(t, variants[2])) // go1.19
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	vic = startVictim(t, path, "writes")
	code, _ := vic.waitRace(t, 60*time.Second)
	if code != 2 || !mapFatalLine(firstLine(vic.stderr.String()), "classic") {
		t.Fatalf("rewritten binary: exit %d, stderr %q", code, firstLine(vic.stderr.String()))
	}
	cr := d.crashOf(t, vic.pid)
	if !strings.HasPrefix(cr.Process.GoVersion, "go1.19") {
		t.Errorf("report says %s, the file is now go1.19", cr.Process.GoVersion)
	}
	if ds := d.discovery(t); ds.Replaced == 0 {
		t.Errorf("rewritten binary not counted as replaced: %+v", ds)
	}
}

// TestBinaryCap: past discovery.max_binaries the binary run least recently
// by no live process loses its probes, and its next exec is held and
// probed again (its ignore mark went with its probes).
func TestBinaryCap(t *testing.T) {
	startDaemonCheck(t)
	dir := t.TempDir()
	d := startDaemon(t, dir, "", "MAPSENTRY_DISCOVERY_MAX_BINARIES=2")
	d.requireGate(t)
	var paths []string
	for i := 0; i < 3; i++ {
		p := filepath.Join(dir, fmt.Sprintf("job%d", i))
		copyFile(t, shared.victim(t, variants[0]), p, 0o755)
		paths = append(paths, p)
	}
	run := func(p string) {
		t.Helper()
		if code := startVictim(t, p, "ok").wait(t, 30*time.Second); code != 0 {
			t.Fatalf("%s: exit %d", p, code)
		}
		d.binaryAt(t, p)
	}
	listed := func() []string {
		var out []string
		for _, b := range d.psAll(t) {
			out = append(out, filepath.Base(b.Path))
		}
		slices.Sort(out)
		return out
	}
	for _, p := range paths {
		run(p)
	}
	if got := listed(); !slices.Equal(got, []string{"job1", "job2"}) {
		t.Fatalf("after three binaries under a cap of two: %v, want job1 job2 (job0 run least recently)", got)
	}
	run(paths[0]) // held and probed again; job1 goes
	if got := listed(); !slices.Equal(got, []string{"job0", "job2"}) {
		t.Fatalf("after job0 again: %v, want job0 job2", got)
	}
	if b := d.binaryAt(t, paths[0]); b.FoundBy != "exec-gate" {
		t.Errorf("job0 again found by %s: its exec was not held", b.FoundBy)
	}
}

func (d *daemon) psAll(t *testing.T) []apitype.Binary {
	t.Helper()
	bins, err := d.c.PS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bins
}

// TestExecGateFailsOpen: execs held by the gate proceed when the daemon
// dies. The daemon is stopped during an exec storm of new binaries (each
// exec then waits in the kernel), then SIGKILLed: every waiting exec must
// run promptly (well within the deadline, which nobody is left to
// enforce: only the kernel can have let them go), and none is left
// hanging.
//
// The storm runs in shell loops, not in this process: Go's fork/exec
// (vfork) keeps its P while the child's exec waits, and a stopped daemon
// would then stall this test's own scheduler.
func TestExecGateFailsOpen(t *testing.T) {
	startDaemonCheck(t)
	dir := t.TempDir()
	// The longest deadline there is: the daemon is dead anyway, so what
	// releases the held execs after the kill can only be the kernel.
	const deadline = 10 * time.Second
	d := startDaemon(t, dir, "", "MAPSENTRY_DISCOVERY_EXEC_GATE_DEADLINE="+deadline.String())
	d.requireGate(t)
	stopFile := filepath.Join(dir, "stop")
	// Each iteration copies a binary to a new inode (the gate holds
	// every one) and prints the nanoseconds before and after running it.
	loop := `i=0; while [ ! -e %[1]s ]; do i=$((i+1)); f=%[2]s/storm-%[3]d-$i; cp %[4]s $f;
s=$(date +%%s%%N); $f ok >/dev/null 2>&1; e=$(date +%%s%%N); echo $s $e; done`
	var storms []*exec.Cmd
	var outs []*syncWriter
	for w, src := range []string{"/bin/true", shared.victim(t, variants[0]), "/bin/true", shared.victim(t, variants[0]), "/bin/true", shared.victim(t, variants[2])} {
		cmd := exec.Command("sh", "-c", fmt.Sprintf(loop, stopFile, dir, w, src))
		out := &syncWriter{w: &strings.Builder{}}
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		storms, outs = append(storms, cmd), append(outs, out)
	}
	stormsDone := make(chan struct{})
	go func() {
		for _, c := range storms {
			c.Wait()
		}
		close(stormsDone)
	}()
	t.Cleanup(func() {
		os.WriteFile(stopFile, nil, 0o644)
		select {
		case <-stormsDone:
		case <-time.After(30 * time.Second):
			for _, c := range storms {
				c.Process.Kill()
			}
		}
	})
	time.Sleep(time.Second)
	// Stopped, the daemon answers nothing: the storm's execs pile up in
	// the kernel. Whatever happens next, it must not stay stopped.
	defer d.kill()
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	killAt := time.Now()
	d.kill()
	time.Sleep(time.Second)
	os.WriteFile(stopFile, nil, 0o644)
	select {
	case <-stormsDone:
	case <-time.After(20 * time.Second):
		t.Fatal("execs still waiting 20 s after the daemon was killed")
	}
	n, pending, after := 0, 0, 0
	var longest time.Duration
	for _, out := range outs {
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var s, e int64
			if _, err := fmt.Sscan(line, &s, &e); err != nil {
				continue
			}
			n++
			start, end := time.Unix(0, s), time.Unix(0, e)
			longest = max(longest, end.Sub(start))
			if start.Before(killAt) && end.After(killAt) {
				pending++
				// The measure spans the victim's whole run and two forks
				// of date: a second or two on a loaded machine. The
				// kernel releasing the daemon's uprobe links before the
				// group took ~5 s (probes.highFd).
				if wait := end.Sub(killAt); wait > 3*time.Second {
					t.Errorf("an exec held at the kill ran %s after it", wait)
				}
			}
			if start.After(killAt) {
				after++
			}
		}
	}
	if pending == 0 {
		t.Fatalf("no exec was waiting when the daemon was killed (%d execs): the test proved nothing", n)
	}
	if after == 0 {
		t.Errorf("no exec ran after the daemon was killed")
	}
	if longest >= deadline {
		t.Errorf("an exec waited %s, the deadline is %s", longest, deadline)
	}
	t.Logf("%d execs, %d waiting at the SIGKILL, %d after it; longest %s (stopped for 300ms)", n, pending, after, longest)
}

// TestExecGateNeedsSysAdmin: without CAP_SYS_ADMIN the kernel refuses the
// gate; the daemon says so (status, naming the capability) and still
// captures crashes, finding new binaries through exec events.
func TestExecGateNeedsSysAdmin(t *testing.T) {
	startDaemonCheck(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		testenv.Unavailable(t, "setpriv not installed (make deps installs util-linux)")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "victim")
	copyFile(t, shared.victim(t, variants[0]), path, 0o755)
	d := startDaemonIn(t, []string{"setpriv", "--bounding-set=-sys_admin", "--"}, dir, "")
	g := d.gateOpen(t)
	if g.State != "unavailable" || !strings.Contains(g.Reason, "CAP_SYS_ADMIN") {
		t.Fatalf("exec gate %q (%s): want unavailable, naming CAP_SYS_ADMIN", g.State, g.Reason)
	}
	if !strings.Contains(d.logText(), "exec gate unavailable") {
		t.Errorf("the log does not say the exec gate is unavailable:\n%s", d.logText())
	}
	out, err := d.cli(t, "status")
	if err != nil || !strings.Contains(out, "exec gate") || !strings.Contains(out, "CAP_SYS_ADMIN") {
		t.Errorf("mapsentry status does not name the missing capability (%v):\n%s", err, out)
	}
	vic := startVictim(t, path, "writes", "wait")
	b := d.waitAttached(t, vic.pid)
	if b.FoundBy == "exec-gate" {
		t.Errorf("found by %s with the gate unavailable", b.FoundBy)
	}
	vic.release()
	if code, _ := vic.waitRace(t, 60*time.Second); code != 2 {
		t.Fatalf("exit %d", code)
	}
	d.crashOf(t, vic.pid)
}

// TestContainerNamespaces runs a crashing victim in its own mount and PID
// namespaces (unshare), from a tmpfs mounted only inside them: the daemon
// marks that filesystem (seen through the namespace's mount table), holds
// the exec, and the report names the process by both PIDs with its cgroup.
func TestContainerNamespaces(t *testing.T) {
	startDaemonCheck(t)
	for _, tool := range []string{"unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, tool+" not installed (make deps installs util-linux and mount)")
		}
	}
	dir := t.TempDir()
	nsdir := filepath.Join(dir, "ns")
	os.Mkdir(nsdir, 0o755)
	victimPath := filepath.Join(nsdir, "victim")
	d := startDaemon(t, dir, "")
	d.requireGate(t)

	// The container runtime's part: a filesystem of its own, the binary
	// copied in, a moment of set-up, then the program (as a child of a
	// shell standing for the container's init).
	script := fmt.Sprintf("mount -t tmpfs mapsentry-test %s && cp %s %s && sleep 0.3 && %s writes wait",
		nsdir, shared.victim(t, variants[0]), victimPath, victimPath)
	// And a cgroup of its own, named the way docker names a container's.
	id := fmt.Sprintf("%016x%016x%016x%016x", time.Now().UnixNano(), os.Getpid(), 0xdecafbad, 0x5eed)
	cg := filepath.Join(cgroup2Mount(t), "docker-"+id+".scope")
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatalf("make a cgroup: %v", err)
	}
	t.Cleanup(func() { os.Remove(cg) })
	cmd := exec.Command("sh", "-c", `echo $$ > "$1/cgroup.procs" && exec unshare --mount --pid --fork --mount-proc sh -c "$2"`,
		"sh", cg, script)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var hostPID int
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			if hostPID > 0 {
				syscall.Kill(hostPID, syscall.SIGCONT)
			}
			cmd.Process.Kill()
			<-done
		}
	})
	header, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("victim header: %v (stderr %q)", err, stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	var nsPID int
	fmt.Sscanf(strings.TrimSpace(header), "pid=%d", &nsPID)
	if _, err := os.Stat(victimPath); err == nil {
		t.Fatal("the victim's binary is visible outside its mount namespace")
	}
	// Its exec event was sent without a wake-up (the gate held it and
	// probed the file): the process is listed at the exec reader's next
	// turn or the next rescan.
	var b apitype.Binary
	waitFor(t, 5*time.Second, "the victim's process listed", func() bool {
		b = d.binaryAt(t, victimPath)
		return len(b.PIDs) == 1
	})
	hostPID = b.PIDs[0]
	if b.FoundBy != "exec-gate" {
		t.Errorf("found by %s, want exec-gate: the tmpfs inside the namespace was not covered in time", b.FoundBy)
	}
	covered := false
	for _, f := range d.discovery(t).Gate.Filesystems {
		covered = covered || (f.FSType == "tmpfs" && f.Mount == nsdir && f.Namespace != "" && f.Covered)
	}
	if !covered {
		t.Errorf("the namespace's tmpfs at %s is not listed as covered: %+v", nsdir, d.discovery(t).Gate.Filesystems)
	}

	io.WriteString(stdin, "go\n")
	stdin.Close()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("victim did not die")
	}
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.HasPrefix(stderr.String(), "fatal error: concurrent map") {
		t.Fatalf("exit %d, stderr %q", code, firstLine(stderr.String()))
	}
	cr := d.crashOf(t, hostPID)
	p := cr.Process
	if p.PID != hostPID || p.NSPID != nsPID || nsPID == hostPID || p.Exe != victimPath {
		t.Errorf("process %+v: want pid %d (host), ns_pid %d (its namespace), exe %s", p, hostPID, nsPID, victimPath)
	}
	if !strings.HasSuffix(p.Cgroup, "/docker-"+id+".scope") || p.Container != id {
		t.Errorf("cgroup %q, container %q: want the cgroup docker-%s.scope and its id", p.Cgroup, p.Container, id)
	}
	if len(cr.Goroutines) < 2 || cr.Map == nil {
		t.Errorf("report without goroutines or map: %d goroutines, map %+v", len(cr.Goroutines), cr.Map)
	}
	t.Logf("host pid %d, namespace pid %d, cgroup %s, unit %q, container %q", p.PID, p.NSPID, p.Cgroup, p.Unit, p.Container)
}

// cgroup2Mount is where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup
// on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones).
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i := slices.Index(f, "-"); i > 0 && i+1 < len(f) && f[i+1] == "cgroup2" {
			return f[4]
		}
	}
	testenv.Unavailable(t, "no cgroup v2 hierarchy mounted")
	return ""
}

// TestDumpDocker compares `mapsentry dump` of a live docker CLI (a real
// third-party Go program: cgo, linked by gcc, its pclntab in .data.rel.ro)
// with the runtime's own SIGQUIT traceback of the same process: the same
// goroutines, with the same function frames. `docker login
// --password-stdin` waits on its standard input without an engine.
func TestDumpDocker(t *testing.T) {
	startDaemonCheck(t)
	docker, err := exec.LookPath("docker")
	if err != nil {
		testenv.Unavailable(t, "no docker CLI on this machine: no externally linked third-party Go binary")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "docker")
	copyFile(t, docker, path, 0o755)
	d := startDaemon(t, dir, "")
	cmd := exec.Command(path, "login", "--password-stdin", "-u", "mapsentry", "registry.invalid")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(dir, "config"), "GOTRACEBACK=system")
	stdin, _ := cmd.StdinPipe()
	stderr := &syncWriter{w: &strings.Builder{}}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
			cmd.Process.Kill()
			<-done
		}
		stdin.Close()
	})
	pid := cmd.Process.Pid
	b := d.binaryAt(t, path)
	t.Logf("docker: %s, pclntab by %s, external link %v, found by %s", b.GoVersion, b.PCLNTab.How, b.ExternalLink, b.FoundBy)
	// Let it settle, blocked reading its password.
	waitFor(t, 10*time.Second, "docker blocked on stdin", func() bool {
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/wchan")
		for _, tk := range tasks {
			if wchan, _ := os.ReadFile(tk); strings.Contains(string(wchan), "pipe_read") {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond)
	res, err := d.c.Dump(context.Background(), inspect.DumpRequest{PID: pid})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	syscall.Kill(pid, syscall.SIGQUIT)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("docker did not die of SIGQUIT")
	}
	theirs := parseTraceback(stderr.String())
	if len(theirs) == 0 {
		t.Fatalf("no goroutines in docker's SIGQUIT traceback:\n%s", stderr.String())
	}
	ours := map[int64][]string{}
	for _, g := range res.Goroutines {
		var fns []string
		for _, f := range g.Frames {
			fns = append(fns, f.Function)
		}
		ours[g.ID] = fns
	}
	frames := 0
	for id, fns := range theirs {
		frames += len(fns)
		if len(fns) == 0 {
			t.Errorf("goroutine %d: no frames parsed from the runtime's traceback", id)
		}
		got, ok := ours[id]
		if !ok {
			t.Errorf("goroutine %d in the runtime's traceback, not in the dump", id)
			continue
		}
		if !slices.Equal(got, fns) {
			t.Errorf("goroutine %d:\n dump:    %v\n runtime: %v", id, got, fns)
		}
	}
	for id := range ours {
		if _, ok := theirs[id]; !ok {
			t.Errorf("goroutine %d in the dump, not in the runtime's traceback", id)
		}
	}
	if t.Failed() {
		t.Logf("runtime traceback:\n%s", stderr.String())
	}
	t.Logf("%d goroutines, %d function frames, the same in both; goroutine 1: %v", len(theirs), frames, theirs[1])
}

// parseTraceback reads a Go traceback (GOTRACEBACK=system): goroutine id
// -> its function frames, innermost first. Goroutine 0 (the thread that
// took the signal) is left out: it is not a goroutine.
func parseTraceback(s string) map[int64][]string {
	out := map[int64][]string{}
	var cur int64 = -1
	for _, line := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(line, "goroutine "); ok {
			id, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil || id == 0 {
				cur = -1
				continue
			}
			cur = id
			out[cur] = nil
			continue
		}
		if cur < 0 || line == "" || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "created by ") ||
			strings.HasPrefix(line, "...") {
			if line == "" {
				cur = -1
			}
			continue
		}
		fn := line
		if i := strings.LastIndex(fn, "("); i > 0 {
			fn = fn[:i]
		}
		out[cur] = append(out[cur], fn)
	}
	return out
}
