package integration

// Issue 15: the service under a real systemd (nspawn_test.go boots one).
// One container for the whole test; each step leaves the daemon running
// with the installed configuration for the next.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/exporter"
	"github.com/mapsentry/mapsentry/internal/jaegertest"
	"github.com/mapsentry/mapsentry/report"
)

func TestSystemdService(t *testing.T) {
	started := time.Now()
	c := bootContainer(t)
	// A Jaeger on the host: the container shares its network, so the
	// daemon reaches it at 127.0.0.1 through the unit's IPAddressAllow=
	// localhost, with no /etc/hosts and no DNS in the container.
	j := jaegertest.Start(t)
	// These tests crash one victim binary dozens of times a minute: that is
	// a crash loop to the default budget (capture.loop.max_full 5), which
	// would count most of them instead of capturing them. The budget has
	// its own test (integration/group_test.go); here every crash is full.
	c.setFile("/etc/mapsentry/conf.d/05-test-loop.yaml", "capture:\n  loop:\n    max_full: 100000\n")
	c.setFile("/etc/mapsentry/conf.d/10-test-export.yaml", fmt.Sprintf(
		"export:\n  otlp:\n    endpoint: %s\n  queue:\n    retry_initial: 200ms\n    retry_max: 1s\n    poll: 500ms\n", j.OTLPGRPC))

	ok := t.Run("EnableNow", func(t *testing.T) { enableNow(t, c.in(t)) })
	if !ok {
		t.Fatal("the daemon did not start under systemd: nothing else can be tested")
	}
	t.Run("CrashOfATransientService", func(t *testing.T) { crashOfTransientService(t, c.in(t), j) })
	t.Run("StopWhileCrashing", func(t *testing.T) { stopWhileCrashing(t, c.in(t)) })
	t.Run("KillWhileFrozen", func(t *testing.T) { killWhileFrozen(t, c.in(t)) })
	t.Run("KillWhileSigstopped", func(t *testing.T) { killWhileSigstopped(t, c.in(t)) })
	t.Run("Watchdog", func(t *testing.T) { watchdog(t, c.in(t)) })
	t.Run("RestartDuringStorm", func(t *testing.T) { restartDuringStorm(t, c.in(t)) })
	t.Run("SeccompRefusalNamed", func(t *testing.T) { seccompRefusalNamed(t, c.in(t)) })
	t.Logf("whole test, boot included: %s", time.Since(started).Round(time.Second))
}

// enableNow: `systemctl enable --now` returns once the daemon said READY=1
// (Type=notify), with its status text, start-up lines in the journal, and
// every start-up check passed under the unit's sandbox.
func enableNow(t *testing.T, c *container) {
	begin := time.Now()
	c.must("systemctl", "enable", "--now", "mapsentry")
	took := time.Since(begin)
	p := c.show("mapsentry", "Type", "ActiveState", "SubState", "StatusText", "NRestarts", "UnitFileState")
	if p["Type"] != "notify" || p["ActiveState"] != "active" || p["SubState"] != "running" || p["UnitFileState"] != "enabled" {
		t.Fatalf("after enable --now: %v", p)
	}
	if !strings.HasPrefix(p["StatusText"], "watching ") {
		t.Errorf("status text %q, want the daemon's \"watching ...\"", p["StatusText"])
	}
	status := c.must("systemctl", "status", "--no-pager", "--lines=0", "mapsentry")
	if !strings.Contains(status, "Active: active (running)") || !strings.Contains(status, `Status: "watching `) {
		t.Errorf("systemctl status:\n%s", status)
	}
	journal := c.must("journalctl", "--unit=mapsentry", "--no-pager", "--output=cat")
	for _, want := range []string{"mapsentry daemon running", "running in a child PID namespace"} {
		if !strings.Contains(journal, want) {
			t.Errorf("journal lacks %q:\n%s", want, journal)
		}
	}
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range st.Checks {
		if !ch.OK {
			t.Errorf("start-up check %s failed under the unit: %s", ch.Name, ch.Detail)
		}
	}
	if st.Scope.Host {
		t.Errorf("scope %+v: the container's daemon is not on the host's PID namespace", st.Scope)
	}
	// The operator's first command after the install, as root in the
	// container: every step passes, export to 127.0.0.1 included, and the
	// scope row names the container's PID namespace.
	self, err := c.run("mapsentry", "selftest")
	if err != nil || !regexp.MustCompile(`(?m)^scope\s+PASS\s+only processes of PID namespace`).MatchString(self) ||
		!regexp.MustCompile(`(?m)^export\s+PASS`).MatchString(self) {
		t.Errorf("mapsentry selftest in the container: %v\n%s", err, self)
	}
	// The exposure score as systemd rates the unit it runs (online).
	sec, _ := c.run("systemd-analyze", "security", "--no-pager", "mapsentry")
	m := regexp.MustCompile(`Overall exposure level for mapsentry.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Errorf("systemd-analyze security:\n%s", sec)
	} else if score, _ := strconv.ParseFloat(m[1], 64); score > 3.5 {
		t.Errorf("exposure %.1f > 3.5", score)
	} else {
		t.Logf("systemd-analyze security (online, systemd in the container): %.1f", score)
	}
	t.Logf("enable --now returned in %s; %s", took.Round(time.Millisecond), strings.TrimSpace(status))
}

// crashOfTransientService: a Go program run as a transient service crashes;
// the report has the map, flight-recorder partners, goroutines, and a core
// (written with PTRACE_SEIZE under the unit's system call filter), the
// program exits 2, the trace reaches Jaeger, and the socket's access rules
// hold for root, a member of group mapsentry and a user outside it.
func crashOfTransientService(t *testing.T, c *container, j *jaegertest.Jaeger) {
	c.setFile("/etc/mapsentry/conf.d/20-test-core.yaml", "capture:\n  core:\n    enabled: true\n")
	defer c.setFile("/etc/mapsentry/conf.d/20-test-core.yaml", "")
	c.must("systemctl", "restart", "mapsentry")
	v := c.startVictim("crash-transient", "writes")
	c.attached(v)
	// The map-op flight recorder, armed under the unit's capabilities:
	// partners named with certainty.
	c.must("mapsentry", "arm", "--pid", strconv.Itoa(v.pid))
	v.release()
	if code := v.exit(30 * time.Second); code != 2 {
		t.Errorf("victim exit status %d, want 2", code)
	}
	cr := c.crashOf(v.pid)
	if cr.Fatal.Kind != report.KindMapConcurrentWrite || !cr.Freeze.AllThreadsStopped || !cr.Freeze.Resumed ||
		cr.Freeze.DeadlineHit || len(cr.Capture.Errors) > 0 {
		t.Errorf("report: kind %s, freeze %+v, errors %q", cr.Fatal.Kind, cr.Freeze, cr.Capture.Errors)
	}
	if !checkMap(t, cr, v.header) {
		t.Errorf("map not located: %+v", cr.Map)
	}
	if !flightRecorded(cr) {
		t.Errorf("no flight-recorder partner: %+v (note %q)", cr.Partners, cr.PartnersNote)
	}
	if len(cr.Goroutines) < 2 {
		t.Errorf("%d goroutines captured", len(cr.Goroutines))
	}
	if cr.Capture.Core == nil || cr.Capture.Core.Threads == 0 {
		t.Errorf("no core with thread registers (PTRACE_SEIZE under the unit's filter): %+v", cr.Capture.Core)
	}
	if cr.Process.Unit != "crash-transient.service" {
		t.Errorf("report names unit %q, want crash-transient.service", cr.Process.Unit)
	}
	spans, err := exporter.CrashSpans(cr)
	if err != nil {
		t.Fatal(err)
	}
	waitTrace(t, j, exporter.TraceID(cr.ID).String(), len(spans))

	// The socket: root and group mapsentry list it, an outsider is refused.
	asUser := func(user string) (string, error) {
		return c.run("setpriv", "--reuid="+user, "--regid="+user, "--init-groups", "--", "mapsentry", "crashes")
	}
	for _, who := range []string{"root", "sre"} {
		out, err := asUser(who)
		if who == "root" {
			out, err = c.run("mapsentry", "crashes")
		}
		if err != nil || !strings.Contains(out, cr.ID) {
			t.Errorf("mapsentry crashes as %s: %v\n%s", who, err, out)
		}
	}
	out, err := asUser("outsider")
	if err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("mapsentry crashes as a user outside group mapsentry: %v\n%s", err, out)
	}
	t.Logf("outsider: %s", strings.TrimSpace(out))
	t.Logf("captured %s from unit %s: frozen %s, %d goroutines, %d partners, core %+v",
		cr.ID, cr.Process.Unit, time.Duration(cr.Freeze.FrozenNS), len(cr.Goroutines), len(cr.Partners), cr.Capture.Core)
}

// stopWhileCrashing: `systemctl stop` while 20 programs crash: every one
// exits 2, none is left stopped.
func stopWhileCrashing(t *testing.T, c *container) {
	const n = 20
	vs := make([]*cvictim, n)
	for i := range vs {
		vs[i] = c.startVictim(fmt.Sprintf("crash-stop-%02d", i), "writes")
	}
	c.attached(vs...)
	st0, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	stops := c.stopLines()
	for _, v := range vs {
		v.release()
	}
	// Stop once the daemon has taken on the first of them, the rest still
	// racing into their crashes.
	waitFor(t, 20*time.Second, "the first crash taken on", func() bool {
		st, err := c.status()
		return err == nil && st.Capture.Sessions > st0.Capture.Sessions
	})
	c.must("systemctl", "stop", "mapsentry")
	codes := map[int]int{}
	for _, v := range vs {
		codes[v.exit(30*time.Second)]++
	}
	if codes[2] != n {
		t.Errorf("exit statuses of %d victims: %v, want all 2", n, codes)
	}
	stop := c.lastStop(t, stops)
	checkNoneLost(t, "systemctl stop", stop)
	took := stop["sessions"] - int(st0.Capture.Sessions)
	reported := 0
	c.must("systemctl", "start", "mapsentry")
	for _, cr := range c.crashes() {
		for _, v := range vs {
			if cr.Process.PID == v.pid {
				reported++
			}
		}
	}
	if took < 1 || reported != took {
		t.Errorf("stop during %d crashes: the daemon took on %d of them and %d have a report, want every one taken on reported (at least 1)", n, took, reported)
	}
	t.Logf("stop during %d crashes: exit statuses %v, %d taken on before the stop, %d reports", n, codes, took, reported)
}

// stopLines counts the journal's "daemon stopped" lines: lastStop then
// reads the first one after them.
func (c *container) stopLines() int { return len(c.stops()) }

func (c *container) stops() []string {
	journal := c.must("journalctl", "--unit=mapsentry", "--no-pager", "--output=cat")
	var out []string
	for _, l := range strings.Split(journal, "\n") {
		if strings.Contains(l, `msg="mapsentry daemon stopped"`) {
			out = append(out, l)
		}
	}
	return out
}

// lastStop is the counters of the daemon's stop line that came after the
// first `before` ones: what that run took on and what became of it.
func (c *container) lastStop(t *testing.T, before int) map[string]int {
	t.Helper()
	var lines []string
	waitFor(t, 10*time.Second, "the daemon's stop line in the journal", func() bool {
		lines = c.stops()
		return len(lines) > before
	})
	out := map[string]int{}
	for _, f := range strings.Fields(lines[before]) {
		k, v, ok := strings.Cut(f, "=")
		if n, err := strconv.Atoi(v); ok && err == nil {
			out[k] = n
		}
	}
	return out
}

// checkNoneLost: every crash the stopped daemon took on has its report
// (or was counted by the crash-loop budget), and none it held was let go
// uncaptured (dropped_held; a crash that ran on while the daemon stopped,
// its hold refused, dies untouched as it would without mapsentry).
func checkNoneLost(t *testing.T, what string, stop map[string]int) {
	t.Helper()
	if _, ok := stop["sessions"]; !ok {
		t.Errorf("%s: the stop line has no counters: %v", what, stop)
		return
	}
	if stop["dropped_held"] != 0 || stop["sessions"] != stop["captured"]+stop["loop_suppressed"] {
		t.Errorf("%s: the stopped daemon lost crashes it took on: %v", what, stop)
	}
}

// killWhileFrozen: SIGKILL to the daemon while it holds processes: they
// are released within 5 s (ExecStopPost), Restart=on-failure brings the
// daemon back, and it captures the next crash.
func killWhileFrozen(t *testing.T, c *container) {
	const hold = "/etc/mapsentry/conf.d/30-test-hold.yaml"
	c.setFile(hold, "freeze:\n  max: 60s\ncapture:\n  debug_hold: 50s\n")
	defer c.setFile(hold, "")
	c.must("systemctl", "restart", "mapsentry")
	restarts, _ := strconv.Atoi(c.show("mapsentry", "NRestarts")["NRestarts"])
	vs := []*cvictim{c.startVictim("crash-kill-0", "writes"), c.startVictim("crash-kill-1", "writes"), c.startVictim("crash-kill-2", "writes")}
	c.attached(vs...)
	for _, v := range vs {
		v.release()
	}
	waitFor(t, 20*time.Second, "3 victims frozen", func() bool {
		st, err := c.status()
		return err == nil && st.Capture.ActiveFreezes == 3
	})
	released := killDaemon(t, c, vs, func() { c.setFile(hold, "") }) // the restarted daemon holds nothing
	p := c.waitActive(restarts+1, 30*time.Second)
	// The holds were ptrace's (taken over from a SIGSTOP, if any, long
	// before the kill): the kernel released the victims when the daemon
	// died, and ExecStopPost (resume-frozen) found nothing left to resume.
	journal := c.must("journalctl", "--unit=mapsentry", "--no-pager", "--output=cat", "--since=-2min")
	if strings.Contains(journal, "resumed pid") {
		t.Errorf("ExecStopPost (resume-frozen) had to resume a victim the kernel should have released:\n%s", lastLines(journal, 30))
	}
	next := c.startVictim("crash-kill-next", "writes")
	c.attached(next)
	next.release()
	if code := next.exit(30 * time.Second); code != 2 {
		t.Errorf("next victim exit status %d, want 2", code)
	}
	cr := c.crashOf(next.pid)
	if cr.Fatal.Kind != report.KindMapConcurrentWrite || !cr.Freeze.Resumed {
		t.Errorf("next crash after the restart: kind %s, freeze %+v", cr.Fatal.Kind, cr.Freeze)
	}
	t.Logf("killed with 3 frozen: all released %s later; restarted (NRestarts %s, pid %s); next crash captured",
		released.Round(time.Millisecond), p["NRestarts"], p["MainPID"])
}

// killWhileSigstopped: the rescue that killWhileFrozen's ptrace holds do
// not need — programs stopped by the probe's SIGSTOP that no live daemon
// took over. Under freeze.hold=sigstop the daemon is itself stopped
// (SIGSTOP) while its heartbeat still lets the probes hold, so 3 crashing
// programs stop themselves at the crash probe and stay stopped (state T);
// then SIGKILL: the unit's ExecStopPost (resume-frozen: frozen records,
// then the sweep for programs stopped at a crash function) or the
// restarted daemon resumes them within 5 s, and each exits 2.
func killWhileSigstopped(t *testing.T, c *container) {
	const hold = "/etc/mapsentry/conf.d/30-test-hold.yaml"
	defer func() {
		c.setFile(hold, "")
		c.must("systemctl", "reset-failed", "mapsentry")
		c.must("systemctl", "restart", "mapsentry")
	}()
	c.setFile(hold, "freeze:\n  hold: sigstop\n")
	c.must("systemctl", "reset-failed", "mapsentry") // the restarts before count against the start limit
	c.must("systemctl", "restart", "mapsentry")
	restarts, _ := strconv.Atoi(c.show("mapsentry", "NRestarts")["NRestarts"])
	vs := []*cvictim{c.startVictim("crash-sigstop-0", "writes"), c.startVictim("crash-sigstop-1", "writes"), c.startVictim("crash-sigstop-2", "writes")}
	c.attached(vs...)
	// The heartbeat keeps the probes holding for up to liveFor (5 s) after
	// the last pulse: at least 3 s after this stop.
	c.must("systemctl", "kill", "--signal=STOP", "mapsentry")
	for _, v := range vs {
		v.release()
	}
	state := func(v *cvictim) string {
		out, _ := c.run("sh", "-c", fmt.Sprintf("sed 's/.*) //' /proc/%d/stat | cut -c1", v.pid))
		return strings.TrimSpace(out)
	}
	waitFor(t, 10*time.Second, "3 victims stopped at the crash probe", func() bool {
		for _, v := range vs {
			if state(v) != "T" {
				return false
			}
		}
		return true
	})
	since := time.Now().Add(-time.Second).Format("2006-01-02 15:04:05")
	released := killDaemon(t, c, vs, func() { c.setFile(hold, "") })
	c.waitActive(restarts+1, 30*time.Second)
	journal := c.must("journalctl", "--unit=mapsentry", "--no-pager", "--output=cat", "--since="+since)
	if !strings.Contains(journal, "resumed") {
		t.Errorf("no resume line after the kill: who released the stopped victims?\n%s", lastLines(journal, 30))
	}
	t.Logf("killed with 3 programs SIGSTOPped and not taken over: all exited 2, %s after the kill; journal:\n%s",
		released.Round(time.Millisecond), grepLines(journal, "resume"))
}

// killDaemon SIGKILLs the daemon while it holds vs, runs then (before the
// restart comes), and requires each victim to exit 2 within 5 s of the
// kill; it returns how long they took.
func killDaemon(t *testing.T, c *container, vs []*cvictim, then func()) time.Duration {
	t.Helper()
	killed := time.Now()
	c.must("systemctl", "kill", "--signal=KILL", "mapsentry")
	then()
	var wg sync.WaitGroup
	codes := make([]int, len(vs))
	for i, v := range vs {
		wg.Add(1)
		go func() { defer wg.Done(); codes[i] = v.exit(5 * time.Second) }()
	}
	wg.Wait()
	released := time.Since(killed)
	for i, code := range codes {
		if code != 2 {
			t.Errorf("victim %s exit status %d, want 2", vs[i].name, code)
		}
	}
	if released > 5*time.Second {
		t.Errorf("victims released %s after the daemon was killed, want within 5s", released)
	}
	return released
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// watchdog: a daemon whose event loop blocks (the test-only fault switch
// capture.debug_block_events_after) stops pinging, and systemd restarts it
// within WatchdogSec + 5 s of the block.
func watchdog(t *testing.T, c *container) {
	const (
		dropin = "/etc/systemd/system/mapsentry.service.d/50-test-watchdog.conf"
		fault  = "/etc/mapsentry/conf.d/40-test-wedge.yaml"
		wdog   = 5 * time.Second
		after  = 3 * time.Second
	)
	// A short watchdog keeps the test short; the mechanism is the one the
	// unit's 30 s uses.
	c.setFile(dropin, fmt.Sprintf("[Service]\nWatchdogSec=%ds\n", int(wdog.Seconds())))
	c.setFile(fault, fmt.Sprintf("capture:\n  debug_block_events_after: %s\n", after))
	defer func() {
		c.setFile(dropin, "")
		c.setFile(fault, "")
		c.must("systemctl", "daemon-reload")
		c.must("systemctl", "restart", "mapsentry")
	}()
	c.must("systemctl", "daemon-reload")
	c.must("systemctl", "restart", "mapsentry")
	restarts, _ := strconv.Atoi(c.show("mapsentry", "NRestarts")["NRestarts"])
	// The event loop starts after exec: blocking at start + after is no
	// later than the real block.
	blocked := c.monotonic("mapsentry", "ExecMainStartTimestampMonotonic") + after
	waitFor(t, 10*time.Second, "the event loop blocked", func() bool { return monotonicNow() > blocked })
	c.setFile(fault, "") // the restarted daemon runs normally
	c.waitActive(restarts+1, 2*wdog+30*time.Second)
	restarted := c.monotonic("mapsentry", "ExecMainStartTimestampMonotonic")
	ready := c.monotonic("mapsentry", "ActiveEnterTimestampMonotonic")
	journal := c.must("journalctl", "--unit=mapsentry", "--no-pager", "--output=cat", "--since=-2min")
	if !strings.Contains(journal, "Watchdog timeout") && !strings.Contains(journal, "watchdog timeout") {
		t.Errorf("journal does not show a watchdog timeout:\n%s", lastLines(journal, 30))
	}
	if !strings.Contains(journal, "event loop stalled") {
		t.Errorf("the daemon did not say why it stopped pinging:\n%s", lastLines(journal, 30))
	}
	if took := restarted - blocked; took > wdog+5*time.Second {
		t.Errorf("restarted %s after the block, want within WatchdogSec %s + 5s", took.Round(time.Millisecond), wdog)
	}
	t.Logf("blocked event loop: restarted %s later, ready again %s later (WatchdogSec=%s)",
		(restarted - blocked).Round(time.Millisecond), (ready - blocked).Round(time.Millisecond), wdog)
}

// restartDuringStorm: `systemctl restart` (an upgrade in place) while
// programs crash: the crashes held before the restart and those after it
// all have their reports; every crash the old daemon took on, from any
// wave, has its report (its stop line's counters); crashes in between,
// while no daemon has probes, run to their death untouched; every program
// exits 2, none stays stopped.
func restartDuringStorm(t *testing.T, c *container) {
	const per = 8
	var before, during, after []*cvictim
	for i := 0; i < per; i++ {
		before = append(before, c.startVictim(fmt.Sprintf("crash-storm-a%02d", i), "writes"))
		during = append(during, c.startVictim(fmt.Sprintf("crash-storm-w%02d", i), "writes"))
		after = append(after, c.startVictim(fmt.Sprintf("crash-storm-b%02d", i), "writes"))
	}
	all := append(append(append([]*cvictim{}, before...), during...), after...)
	c.attached(all...)
	old := c.crashes()
	st0, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	fatal0 := st0.Capture.FatalEvents
	for _, v := range before {
		v.release()
	}
	// Restart as soon as the daemon holds every one of them, most still
	// being captured.
	waitFor(t, 20*time.Second, "the first wave held", func() bool {
		st, err := c.status()
		return err == nil && st.Capture.FatalEvents-fatal0 >= per
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, v := range during {
			v.release()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	stops := c.stopLines()
	begin := time.Now()
	c.must("systemctl", "restart", "mapsentry")
	gap := time.Since(begin)
	// The old daemon lost nothing it took on, whichever wave it came from.
	stop := c.lastStop(t, stops)
	checkNoneLost(t, "systemctl restart", stop)
	if t.Failed() {
		t.Logf("%s", grepLines(c.must("journalctl", "--unit=mapsentry", "--no-pager", "--output=cat", "--since=-2min"), "uncaptured"))
	}
	<-done
	c.attached(after...) // READY came after the new daemon's first scan
	for _, v := range after {
		v.release()
	}
	codes := map[int]int{}
	for _, v := range all {
		codes[v.exit(30*time.Second)]++
	}
	if codes[2] != len(all) {
		t.Errorf("exit statuses: %v, want all %d 2", codes, len(all))
	}
	// The exit statuses arrive after the crashes: let the last be recorded.
	time.Sleep(time.Second)
	reports := map[int]int{}
	byPID := map[int]report.Crash{}
	for _, cr := range c.crashes() {
		reports[cr.Process.PID]++
		byPID[cr.Process.PID] = cr
	}
	for _, w := range []struct {
		name string
		vs   []*cvictim
	}{{"before", before}, {"after", after}} {
		for _, v := range w.vs {
			if reports[v.pid] != 1 {
				t.Errorf("victim %s (crashed %s the restart): %d reports, want 1", v.name, w.name, reports[v.pid])
				continue
			}
			cr := byPID[v.pid]
			if cr.Fatal.Kind != report.KindMapConcurrentWrite || len(cr.Goroutines) < 2 || !cr.Freeze.Resumed ||
				cr.Freeze.ExitStatus == nil || *cr.Freeze.ExitStatus != 2 {
				t.Errorf("victim %s (crashed %s the restart): incomplete report: kind %s, %d goroutines, freeze %+v, errors %q",
					v.name, w.name, cr.Fatal.Kind, len(cr.Goroutines), cr.Freeze, cr.Capture.Errors)
			}
		}
	}
	inGap := 0
	for _, v := range during {
		if reports[v.pid] > 1 {
			t.Errorf("victim %s: %d reports of one crash", v.name, reports[v.pid])
		}
		inGap += reports[v.pid]
	}
	for _, cr := range old {
		if reports[cr.Process.PID] == 0 {
			t.Errorf("report %s (pid %d), stored before the restart, is gone", cr.ID, cr.Process.PID)
		}
	}
	t.Logf("restart took %s; %d crashes before and %d after it all reported; %d of %d crashing during it captured; the old daemon's stop: %v",
		gap.Round(time.Millisecond), per, per, inGap, per, stop)
}

// seccompRefusalNamed: a system call the unit's filter refuses is named as
// such at start-up, never as a kernel that lacks a feature; a needed one
// (bpf) stops the start, an optional one (ptrace) degrades it.
func seccompRefusalNamed(t *testing.T, c *container) {
	const dropin = "/etc/systemd/system/mapsentry.service.d/60-test-seccomp.conf"
	defer func() {
		c.setFile(dropin, "")
		c.must("systemctl", "daemon-reload")
		c.must("systemctl", "reset-failed", "mapsentry")
		c.must("systemctl", "restart", "mapsentry")
	}()
	c.setFile(dropin, "[Service]\nSystemCallFilter=~bpf\n")
	c.must("systemctl", "daemon-reload")
	since := time.Now().Add(-time.Second).Format("2006-01-02 15:04:05")
	if out, err := c.run("systemctl", "restart", "mapsentry"); err == nil {
		t.Errorf("daemon started with bpf() refused by the unit's filter: %s", out)
	}
	journal := c.must("journalctl", "--unit=mapsentry", "--no-pager", "--output=cat", "--since="+since)
	if !strings.Contains(journal, "system call bpf refused before it reached the kernel") || strings.Contains(journal, "kernel lacks") {
		t.Errorf("bpf() refused by seccomp, the daemon said:\n%s", lastLines(journal, 20))
	}
	c.must("systemctl", "stop", "mapsentry") // no more restart attempts
	c.must("systemctl", "reset-failed", "mapsentry")

	c.setFile(dropin, "[Service]\nSystemCallFilter=~ptrace\n")
	c.must("systemctl", "daemon-reload")
	c.must("systemctl", "restart", "mapsentry")
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	degraded := false
	for _, ch := range st.Checks {
		if ch.Name == "syscall ptrace" && !ch.OK && strings.Contains(ch.Detail, "a seccomp filter is on this process") {
			degraded = true
			t.Logf("ptrace refused: %s", ch.Detail)
		}
	}
	if !degraded {
		t.Errorf("with ptrace refused, status checks %+v do not name the seccomp refusal", st.Checks)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
