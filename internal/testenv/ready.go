package testenv

import (
	"bufio"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Ready is a started process that announced itself with a "ready" line.
type Ready struct {
	Cmd  *exec.Cmd
	PID  int
	Line string        // its first line of standard output
	Done chan struct{} // closed once it was reaped; Err is its Wait error then
	Err  error
}

// StartReady starts cmd (its standard output is taken; set Stderr before),
// waits up to a minute for a first output line beginning with "ready", and
// at the end of t resumes and kills it: a test never leaves a stopped or
// running process behind, even when it fails.
func StartReady(t testing.TB, cmd *exec.Cmd) *Ready {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &Ready{Cmd: cmd, PID: cmd.Process.Pid, Done: make(chan struct{})}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		select {
		case <-r.Done:
		case <-time.After(10 * time.Second):
		}
	})
	first := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		first <- line
		_, _ = io.Copy(io.Discard, stdout)
		r.Err = cmd.Wait()
		close(r.Done)
	}()
	select {
	case r.Line = <-first:
	case <-time.After(time.Minute):
		t.Fatalf("%s not ready in a minute", cmd.Path)
	}
	if !strings.HasPrefix(r.Line, "ready") {
		t.Fatalf("%s said %q, want ready", cmd.Path, r.Line)
	}
	return r
}
