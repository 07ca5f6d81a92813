package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/report"
)

var (
	pidLine  = regexp.MustCompile(`pid=(\d+) map=`)
	exitLine = regexp.MustCompile(`EXIT=(\d+)`)
)

// TestJobControlSeesNothing: a Go program crashing in the foreground of an
// interactive bash on a terminal ends exactly as without mapsentry — the
// runtime's message on the terminal, $? = 2, no "Stopped" — and the crash
// is reported, held through ptrace. The "detector" case shows the check
// can fail: the same shell sees a 200 ms SIGSTOP of the job.
func TestJobControlSeesNothing(t *testing.T) {
	startDaemonCheck(t)
	if _, err := exec.LookPath("bash"); err != nil {
		testenv.Unavailable(t, "no bash (scripts/deps.sh installs it)")
	}
	path := shared.victim(t, variants[0])
	t.Run("ptrace", func(t *testing.T) {
		d := startDaemon(t, filepath.Join(shared.dir, "bin"), "")
		term, pid := foregroundVictim(t, path, d)
		term.Type(t, "\n") // the victim reads a line, then races
		cr := d.crashOf(t, pid)
		stopped, code, out := jobStatus(t, term)
		t.Logf("hold %s: $?=%d, shell printed Stopped: %v, frozen %s", cr.Freeze.Hold, code, stopped,
			time.Duration(cr.Freeze.FrozenNS))
		if !strings.Contains(out, "fatal error: concurrent map writes") {
			t.Errorf("the runtime's message is not on the terminal:\n%s", out)
		}
		if stopped || code != 2 {
			t.Errorf("the shell saw the hold: Stopped=%v, $?=%d (want 2):\n%s", stopped, code, out)
		}
		if cr.Freeze.Hold != report.HoldPtrace || cr.Freeze.StopVisible || !cr.Freeze.Resumed || !cr.Freeze.AllThreadsStopped {
			t.Errorf("freeze %+v: want a ptrace hold, invisible, every thread stopped, resumed", cr.Freeze)
		}
		if st := cr.Freeze.ExitStatus; st == nil || *st != 2 {
			t.Errorf("recorded exit status %v, want 2", st)
		}
		if len(cr.Goroutines) < 2 || cr.Map == nil || cr.Map.Addr == 0 {
			t.Errorf("report incomplete: %d goroutines, map %+v, errors %v", len(cr.Goroutines), cr.Map, cr.Capture.Errors)
		}
	})
	t.Run("detector", func(t *testing.T) {
		d := startDaemon(t, filepath.Join(shared.dir, "bin"), "")
		term, pid := foregroundVictim(t, path, d)
		syscall.Kill(pid, syscall.SIGSTOP)
		time.Sleep(200 * time.Millisecond)
		stopped, code, out := jobStatus(t, term)
		syscall.Kill(pid, syscall.SIGKILL)
		if !stopped || code != 147 {
			t.Errorf("a SIGSTOP of the foreground job went unseen: Stopped=%v $?=%d:\n%s", stopped, code, out)
		}
	})
}

// foregroundVictim starts an interactive bash on a new terminal, runs the
// crash victim as its foreground job and waits for the daemon's probes.
func foregroundVictim(t *testing.T, path string, d *daemon) (*testenv.Terminal, int) {
	t.Helper()
	bash := exec.Command("bash", "--norc", "--noprofile", "-i")
	bash.Env = append(os.Environ(), "PS1=$ ", "GOTRACEBACK=single", "TERM=dumb")
	term := testenv.StartTerminal(t, bash)
	term.Type(t, path+" writes wait\n")
	m := pidLine.FindStringSubmatch(term.WaitFor(t, " map=0x", 20*time.Second))
	if m == nil {
		t.Fatalf("no victim header on the terminal:\n%s", term.Output())
	}
	pid, _ := strconv.Atoi(m[1])
	d.waitAttached(t, pid)
	return term, pid
}

// jobStatus asks the shell for $? once the job is over, and reports
// whether it printed "Stopped".
func jobStatus(t *testing.T, term *testenv.Terminal) (stopped bool, code int, out string) {
	t.Helper()
	term.Type(t, "echo EXIT=$?\n")
	term.WaitFor(t, "\nEXIT=", 20*time.Second)
	out = term.Output()
	code = -1
	if m := exitLine.FindStringSubmatch(out); m != nil {
		code, _ = strconv.Atoi(m[1])
	}
	return strings.Contains(out, "Stopped"), code, out
}
