package symbolizer_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// A running goroutine whose thread is inside the runtime's signal handler
// at the freeze (async preemption, profiling) is unwound from the
// registers the kernel saved on the signal stack, not from its stale
// g.sched. The victim's thread is stopped at runtime.sighandler by a bare
// SIGSTOP uprobe after a tgkill(SIGURG); its goroutine must show
// main.inner called by main.spin, where it was spinning, not the sleep it
// parked in before.
func TestRunningGoroutineInSignalHandler(t *testing.T) {
	stop := testenv.StopProgram(t)
	for _, tc := range testenv.Toolchains() {
		t.Run(tc, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "sigvictim")
			testenv.BuildGo(t, "testdata/sigvictim", tc, bin, nil)
			cmd := exec.Command(bin)
			// No runtime preemption signals: the only signal is the test's.
			cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) // SIGKILL ends a stopped process too
			var pid, tid int
			line, _ := bufio.NewReader(out).ReadString('\n')
			if _, err := fmt.Sscanf(line, "pid=%d tid=%d", &pid, &tid); err != nil {
				t.Fatalf("victim said %q: %v", line, err)
			}
			ex, err := link.OpenExecutable(bin)
			if err != nil {
				t.Fatal(err)
			}
			l, err := ex.Uprobe("runtime.sighandler", stop, &link.UprobeOptions{PID: pid})
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Tgkill(pid, tid, unix.SIGURG); err != nil {
				l.Close()
				t.Fatal(err)
			}
			stopped := false
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !stopped; time.Sleep(5 * time.Millisecond) {
				ok, err := procmem.AllStopped(pid)
				stopped = err == nil && ok
			}
			l.Close()
			if !stopped {
				t.Fatal("victim not stopped in its signal handler")
			}

			tg := openTarget(t, bin)
			mem, err := procmem.Open(pid, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			regs, err := threadregs.FromProc(pid)
			if err != nil {
				t.Fatal(err)
			}
			snap, err := tg.Capture(mem, regs, symbolizer.CaptureOptions{Deadline: time.Now().Add(2 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			var g *symbolizer.Goroutine
			gs := snap.Symbolize(tg.Table)
			for i := range gs {
				if gs[i].Thread == tid && gs[i].Status == "running" {
					g = &gs[i]
				}
			}
			if g == nil {
				t.Fatalf("no running goroutine on thread %d", tid)
			}
			var fns []string
			for _, f := range g.Frames {
				fns = append(fns, f.Function)
			}
			if len(fns) < 2 || fns[0] != "main.inner" || fns[1] != "main.spin" || !strings.Contains(g.StackError, "signal handler") {
				t.Fatalf("goroutine %d on thread %d: frames %v (%s)", g.ID, tid, fns, g.StackError)
			}
			t.Logf("goroutine %d: %v (%s)", g.ID, fns, g.StackError)
		})
	}
}
