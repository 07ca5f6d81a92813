package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
// is reported, held through ptrace. The same shell under freeze.hold=sigstop
// does see the stop: the check can tell a visible hold from an invisible one.
func TestJobControlSeesNothing(t *testing.T) {
	startDaemonCheck(t)
	if _, err := exec.LookPath("bash"); err != nil {
		testenv.Unavailable(t, "no bash (scripts/deps.sh installs it)")
	}
	path := shared.victim(t, variants[0])
	for _, c := range []struct {
		hold    string
		visible bool
	}{{"ptrace", false}, {"sigstop", true}} {
		t.Run(c.hold, func(t *testing.T) {
			d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_FREEZE_HOLD="+c.hold)
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
			term.Type(t, "\n") // the victim reads a line, then races
			cr := d.crashOf(t, pid)
			term.Type(t, "echo EXIT=$?\n")
			term.WaitFor(t, "\nEXIT=", 20*time.Second)
			out := term.Output()
			m = exitLine.FindStringSubmatch(out)
			code := -1
			if m != nil {
				code, _ = strconv.Atoi(m[1])
			}
			stopped := strings.Contains(out, "Stopped")
			t.Logf("hold %s: $?=%d, shell printed Stopped: %v, frozen %s", cr.Freeze.Hold, code, stopped,
				time.Duration(cr.Freeze.FrozenNS))
			if !strings.Contains(out, "fatal error: concurrent map writes") {
				t.Errorf("the runtime's message is not on the terminal:\n%s", out)
			}
			if c.visible {
				// The control: a SIGSTOP hold is seen by job control.
				if !stopped || code != 147 || cr.Freeze.Hold != report.HoldSigstop || !cr.Freeze.StopVisible {
					t.Errorf("sigstop hold: Stopped=%v $?=%d freeze %+v; want the shell to see the stop", stopped, code, cr.Freeze)
				}
				return
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
	}
}
