package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Terminal is an interactive program on a pseudo-terminal of its own, as
// a user at a terminal runs it: a shell started there gets job control.
type Terminal struct {
	Cmd    *exec.Cmd
	master *os.File

	mu  sync.Mutex
	out bytes.Buffer
	eof chan struct{}
}

// StartTerminal starts cmd as the session leader of a new pseudo-terminal
// (its controlling terminal, on stdin, stdout and stderr) and records
// everything it writes. At the end of t it is killed.
func StartTerminal(t testing.TB, cmd *exec.Cmd) *Terminal {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		Unavailable(t, fmt.Sprintf("no pseudo-terminals: %v", err))
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty %d: %v", n, err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s on a pty: %v", cmd.Path, err)
	}
	slave.Close()
	term := &Terminal{Cmd: cmd, master: master, eof: make(chan struct{})}
	go term.read()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		master.Close()
	})
	return term
}

func (term *Terminal) read() {
	defer close(term.eof)
	buf := make([]byte, 4096)
	for {
		n, err := term.master.Read(buf)
		term.mu.Lock()
		term.out.Write(buf[:n])
		term.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Type writes s to the terminal, as typed.
func (term *Terminal) Type(t testing.TB, s string) {
	t.Helper()
	if _, err := term.master.WriteString(s); err != nil {
		t.Fatalf("type %q: %v", s, err)
	}
}

// Output is everything written to the terminal so far.
func (term *Terminal) Output() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.out.String()
}

// WaitFor waits up to d until the output contains s, and returns the
// output.
func (term *Terminal) WaitFor(t testing.TB, s string, d time.Duration) string {
	t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		out := term.Output()
		if strings.Contains(out, s) {
			return out
		}
		select {
		case <-term.eof:
			t.Fatalf("terminal closed before %q appeared:\n%s", s, out)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("%q did not appear within %s:\n%s", s, d, out)
		}
	}
}
