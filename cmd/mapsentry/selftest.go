package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/daemon"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/report"
)

// stepResult is one row of the self-test table.
type stepResult struct {
	Name   string `json:"name"`
	Status string `json:"status"` // pass, fail, skip
	Detail string `json:"detail,omitempty"`
}

type selftestResult struct {
	OK      bool         `json:"ok"`
	Socket  string       `json:"socket"`
	CrashID string       `json:"crash_id,omitempty"`
	Steps   []stepResult `json:"steps"`
}

func (r *selftestResult) add(name, status, detail string) {
	r.Steps = append(r.Steps, stepResult{Name: name, Status: status, Detail: detail})
	if status == "fail" {
		r.OK = false
	}
}

// skipFrom marks every step from selftestSteps()[from] on as skipped for
// why: a failure that leaves them nothing to check still gives the table
// all its rows.
func (r *selftestResult) skipFrom(from int, why string) {
	for _, name := range selftestSteps()[from:] {
		r.add(name, "skip", why)
	}
}

// errSelftestFailed makes the command exit 1 after printing the table.
var errSelftestFailed = errors.New("selftest failed")

func selftestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "selftest",
		Short: "Crash a Go program on purpose and check the whole chain on this host",
		Long: "selftest runs a Go program shipped inside this binary that dies of \"concurrent map writes\", through the\n" +
			"running daemon, and checks each link: daemon reachable and its start-up checks, probe attached, freeze,\n" +
			"capture, store, exit status 2, export. It prints one row per step with the reason for each failure.\n" +
			"It needs root (it writes its program into the daemon's state directory, which is always in scope).",
		Args: cobra.NoArgs,
	}
	out := output(cmd)
	keep := cmd.Flags().Bool("keep", false, "keep the self-test crash report (default: delete it once checked)")
	timeout := cmd.Flags().Duration("timeout", 30*time.Second, "bound on the whole self-test")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(*out); err != nil {
			return err
		}
		cfg, err := loadConfig(cmd)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		res := runSelftest(ctx, cfg.Socket, *keep)
		if *out == "json" {
			if err := printJSON(cmd.OutOrStdout(), res); err != nil {
				return err
			}
		} else {
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "STEP\tRESULT\tDETAIL")
			for _, s := range res.Steps {
				fmt.Fprintf(w, "%s\t%s\t%s\n", s.Name, strings.ToUpper(s.Status), s.Detail)
			}
			verdict := "PASS"
			if !res.OK {
				verdict = "FAIL"
			}
			fmt.Fprintf(w, "selftest\t%s\t\n", verdict)
			w.Flush()
		}
		if !res.OK {
			return errSelftestFailed
		}
		return nil
	}
	return cmd
}

// runSelftest runs the steps of selftestSteps in order against the daemon
// at socket. A step that leaves the next ones nothing to check ends the
// test, with those rows skipped.
func runSelftest(ctx context.Context, socket string, keep bool) *selftestResult {
	res := &selftestResult{OK: true, Socket: socket}
	c := client.New(socket)
	st, ok := selftestDaemon(ctx, res, c, socket)
	if !ok {
		return res
	}
	exe, vic, ok := selftestProgram(res, st.StateDir)
	if !ok {
		return res
	}
	defer os.Remove(exe)
	defer vic.cleanup()
	if why := waitProbed(ctx, c, vic.cmd.Process.Pid, exe); why != "" {
		res.add("probe", "fail", why)
		res.skipFrom(4, "no probe attached")
		return res
	}
	res.add("probe", "pass", "crash probes attached to "+filepath.Base(exe))

	// Crash it; its exit is checked apart from the report.
	vic.release()
	code, stderr := vic.wait(ctx)
	cr := selftestCrash(ctx, res, c, st.Freeze, vic.cmd.Process.Pid)
	res.add(exitStep(code, stderr))
	res.add(exportStep(ctx, socket))

	if cr != nil && !keep {
		if err := c.DeleteCrash(ctx, cr.ID); err != nil {
			res.add("cleanup", "fail", "delete self-test report: "+err.Error())
		}
	}
	return res
}

// selftestDaemon checks the daemon: reachable (else what this host lacks,
// seen from here), its start-up checks, and a scope that includes this
// process's PID namespace. It returns the status the later steps need,
// or false when the self-test cannot go on.
func selftestDaemon(ctx context.Context, res *selftestResult, c *client.Client, socket string) (*apitype.Status, bool) {
	st, err := c.Status(ctx)
	if err != nil {
		res.add("daemon", "fail", daemonError(socket, err))
		localKernelChecks(res)
		res.skipFrom(1, "daemon not reachable")
		return nil, false
	}
	res.add("daemon", "pass", fmt.Sprintf("pid %d, %s, socket %s", st.PID, st.Version, socket))
	addDaemonChecks(res, st.Checks)
	if why := scopeMismatch(st.Scope); why != "" {
		res.add("scope", "fail", why)
		res.skipFrom(2, "the self-test program would run outside the daemon's PID namespace")
		return nil, false
	}
	res.add("scope", "pass", st.Scope.Description)
	return st, true
}

// addDaemonChecks adds one failed row per failed start-up check, degraded
// (non-fatal) ones included: with those some crashes will not be
// captured. When all passed, one row says so.
func addDaemonChecks(res *selftestResult, checks []apitype.Check) {
	failed := 0
	for _, ch := range checks {
		if !ch.OK {
			failed++
			res.add("daemon check "+ch.Name, "fail", ch.Detail)
		}
	}
	if failed == 0 && len(checks) > 0 {
		res.add("daemon checks", "pass", fmt.Sprintf("%d capabilities and kernel features present", len(checks)))
	}
}

// selftestProgram places our crashing program where the daemon's scope
// always allows it (its state directory) and starts it, waiting to be
// told to crash. The caller removes exe and cleans up the victim; on
// failure nothing is left behind.
func selftestProgram(res *selftestResult, stateDir string) (string, *selftestVictim, bool) {
	exe, err := placeVictim(daemon.SelftestDir(stateDir))
	if err != nil {
		res.add("program", "fail", err.Error())
		res.skipFrom(3, "no self-test program")
		return "", nil, false
	}
	vic, err := startSelftestVictim(exe)
	if err != nil {
		res.add("program", "fail", err.Error())
		res.skipFrom(3, "no self-test program")
		os.Remove(exe)
		return "", nil, false
	}
	res.add("program", "pass", fmt.Sprintf("pid %d: %s", vic.cmd.Process.Pid, exe))
	return exe, vic, true
}

// selftestCrash waits for the crashed program's final report and checks
// what the daemon did: freeze, capture, store. Without a report all three
// fail with the same reason. It returns the report, nil without one.
func selftestCrash(ctx context.Context, res *selftestResult, c *client.Client, freezeEnabled bool, pid int) *report.Crash {
	cr, err := waitCrash(ctx, c, pid)
	if err != nil {
		res.add("freeze", "fail", err.Error())
		res.add("capture", "fail", err.Error())
		res.add("store", "fail", err.Error())
		return nil
	}
	res.CrashID = cr.ID
	res.add(freezeStep(freezeEnabled, cr.Freeze))
	res.add(captureStep(cr))
	res.add(storeStep(ctx, c, cr))
	return cr
}

// freezeStep passes when every thread was stopped and the process resumed
// before the deadline; a daemon with freeze off only observes, so there
// is nothing to check.
func freezeStep(enabled bool, f report.Freeze) (string, string, string) {
	switch {
	case !enabled:
		return "freeze", "skip", "freeze.enabled=false: the daemon observes only"
	case f.Resumed && f.AllThreadsStopped && !f.DeadlineHit:
		return "freeze", "pass", fmt.Sprintf("all threads stopped in %s, frozen %s, resumed",
			time.Duration(f.AllThreadsStoppedNS), time.Duration(f.FrozenNS))
	default:
		return "freeze", "fail", fmt.Sprintf("all threads stopped=%v resumed=%v deadline hit=%v",
			f.AllThreadsStopped, f.Resumed, f.DeadlineHit)
	}
}

// captureStep passes when the report has the kind our program dies of and
// the capture recorded no error.
func captureStep(cr *report.Crash) (string, string, string) {
	if cr.Fatal.Kind == report.KindMapConcurrentWrite && len(cr.Capture.Errors) == 0 {
		return "capture", "pass", fmt.Sprintf("%s: %q, %d bytes read in %s", cr.Fatal.Kind, cr.Fatal.Message,
			cr.Capture.BytesRead, time.Duration(cr.Capture.DurationNS))
	}
	return "capture", "fail", fmt.Sprintf("kind %s (want %s), errors: %s", cr.Fatal.Kind,
		report.KindMapConcurrentWrite, strings.Join(cr.Capture.Errors, "; "))
}

// storeStep passes when the report can be read back and the store is not
// degraded: a degraded daemon serves it from the spool, captured but not
// stored.
func storeStep(ctx context.Context, c *client.Client, cr *report.Crash) (string, string, string) {
	if _, err := c.Crash(ctx, cr.ID); err != nil {
		return "store", "fail", err.Error()
	}
	if now, err := c.Status(ctx); err == nil && now.Store.State == "degraded" {
		return "store", "fail", fmt.Sprintf("report %s waits in the spool (%s): the store is unavailable: %s",
			cr.ID, now.Store.SpoolDir, now.Store.Error)
	}
	return "store", "pass", "report " + cr.ID
}

// exitStep checks that the program died exactly as without mapsentry:
// exit status 2 with the runtime's message on stderr.
func exitStep(code int, stderr string) (string, string, string) {
	if code == 2 && strings.Contains(stderr, "fatal error: concurrent map writes") {
		return "exit", "pass", "exit status 2, \"fatal error: concurrent map writes\" on stderr"
	}
	return "exit", "fail", fmt.Sprintf("exit status %d, stderr starts %q", code, firstLine(stderr))
}

// scopeMismatch says why the daemon cannot watch this self-test's program:
// the CLI runs in another PID namespace than the daemon, so the program's
// PID here is not the one the daemon sees (or the daemon sees nothing).
func scopeMismatch(s apitype.Scope) string {
	own, err := procmem.OwnPIDNamespace()
	if err != nil || s.PIDNamespace == 0 || own == s.PIDNamespace {
		return ""
	}
	return fmt.Sprintf("this selftest runs in PID namespace %d, the daemon in %d (%s): run selftest in the daemon's "+
		"namespace (e.g. inside its container)", own, s.PIDNamespace, s.Description)
}

// selftestSteps names the rows in order; skipFrom fills in what a failure
// leaves unchecked.
func selftestSteps() []string {
	return []string{"daemon", "scope", "program", "probe", "freeze", "capture", "store", "exit", "export"}
}

// daemonError turns a failed status call into the reason an SRE acts on.
func daemonError(socket string, err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("daemon not running: nothing listens on %s (systemctl start mapsentry; journalctl -u mapsentry)", socket)
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("permission denied on %s: run selftest as root (it also needs root to place its program)", socket)
	case errors.Is(err, client.ErrForbidden):
		return "the daemon refused this user: " + err.Error() + " (run selftest as root)"
	}
	return err.Error()
}

// localKernelChecks adds what this host lacks, seen from the CLI, when the
// daemon cannot tell: missing BTF, uprobes, lockdown, kernel features
// (those the daemon can do without, such as uprobe_multi, are not failures).
func localKernelChecks(res *selftestResult) {
	for _, ch := range daemon.Preflight(true) {
		if ch.OK || !ch.Fatal || strings.HasPrefix(ch.Name, "CAP_") {
			continue
		}
		res.add("host "+ch.Name, "fail", ch.Detail)
	}
}

// placeVictim copies this binary into dir under a fresh name: a new inode,
// because the daemon never probes its own binary, and a path in its scope.
func placeVictim(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w (selftest needs root)", dir, err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	path := filepath.Join(dir, "mapsentry-selftest-"+hex.EncodeToString(rnd[:]))
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return "", fmt.Errorf("open own executable: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return "", fmt.Errorf("place self-test program: %w (selftest needs root)", err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		os.Remove(path)
		return "", fmt.Errorf("copy self-test program to %s: %w", path, err)
	}
	if err := dst.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("copy self-test program to %s: %w", path, err)
	}
	return path, nil
}

type selftestVictim struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	done   chan struct{}
}

func startSelftestVictim(exe string) (*selftestVictim, error) {
	v := &selftestVictim{stderr: &bytes.Buffer{}, done: make(chan struct{})}
	v.cmd = exec.Command(exe, "selftest-victim")
	v.cmd.Env = append(os.Environ(), "GOTRACEBACK=single")
	v.cmd.Stderr = v.stderr
	var err error
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := v.cmd.Start(); err != nil {
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("execute %s: %w (is %s mounted noexec?)", exe, err, filepath.Dir(exe))
		}
		return nil, fmt.Errorf("execute %s: %w", exe, err)
	}
	go func() { v.cmd.Wait(); close(v.done) }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		v.cleanup()
		return nil, fmt.Errorf("self-test program did not start: %q %v, stderr %q", line, err, v.stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	return v, nil
}

func (v *selftestVictim) release() { io.WriteString(v.stdin, "go\n"); v.stdin.Close() }

// wait returns the exit code (-1 if it had to be killed) and stderr.
func (v *selftestVictim) wait(ctx context.Context) (int, string) {
	select {
	case <-v.done:
		return v.cmd.ProcessState.ExitCode(), v.stderr.String()
	case <-ctx.Done():
		v.cleanup()
		return -1, v.stderr.String()
	}
}

// cleanup leaves the program dead and never stopped.
func (v *selftestVictim) cleanup() {
	select {
	case <-v.done:
	default:
		_ = v.cmd.Process.Signal(syscall.SIGCONT)
		_ = v.cmd.Process.Kill()
		<-v.done
	}
}

// waitProbed waits until the daemon lists pid with probes; it returns why
// not otherwise.
func waitProbed(ctx context.Context, c *client.Client, pid int, exe string) string {
	for {
		bins, err := c.PS(ctx)
		if err != nil && ctx.Err() == nil {
			return "list watched binaries: " + err.Error()
		}
		for _, b := range bins {
			if b.Path != exe && !containsInt(b.PIDs, pid) {
				continue
			}
			if b.Error != "" {
				return "the daemon found the program but attached no probe: " + b.Error
			}
			if len(b.Probes) > 0 && containsInt(b.PIDs, pid) {
				return ""
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("the daemon did not list pid %d (%s) with probes in time: is %s excluded by discovery.exclude? (mapsentry config)",
				pid, exe, filepath.Dir(exe))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// waitCrash waits for pid's final report with its exit observed.
func waitCrash(ctx context.Context, c *client.Client, pid int) (*report.Crash, error) {
	for {
		cs, err := c.Crashes(ctx, 50)
		if err == nil {
			for i := range cs {
				// Resumed marks the report final (the exit can be seen first).
				if f := cs[i].Freeze; cs[i].Process.PID == pid && f.Resumed && (f.ExitStatus != nil || f.ExitSignal != nil) {
					return &cs[i], nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no crash report for pid %d: the probe did not fire or the capture failed (mapsentry status; journalctl -u mapsentry)", pid)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// exportStep checks that the daemon's OTLP endpoint is reachable, when the
// daemon reports an exporter in its status ("export": {"endpoint": ...}).
func exportStep(ctx context.Context, socket string) (string, string, string) {
	raw, err := rawStatus(ctx, socket)
	if err != nil {
		return "export", "fail", err.Error()
	}
	var s struct {
		Export *struct {
			Endpoint string `json:"endpoint"`
		} `json:"export"`
	}
	_ = json.Unmarshal(raw, &s)
	if s.Export == nil || s.Export.Endpoint == "" {
		return "export", "skip", "the daemon reports no exporter"
	}
	d := net.Dialer{Timeout: 3 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(strings.TrimPrefix(s.Export.Endpoint, "http://"), "https://"))
	if err != nil {
		return "export", "fail", fmt.Sprintf("OTLP endpoint %s unreachable: %v", s.Export.Endpoint, err)
	}
	conn.Close()
	return "export", "pass", "OTLP endpoint " + s.Export.Endpoint + " reachable"
}

func rawStatus(ctx context.Context, socket string) ([]byte, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://mapsentry/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon status: %w", err)
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 16<<20))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
