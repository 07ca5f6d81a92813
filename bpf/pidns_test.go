//go:build linux

package bpf

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// nsChild starts a shell as PID 1 of a new PID namespace (with its own
// /proc) that runs script after a line on its standard input, and returns
// the namespace's nsfs inode and a function that sends the line.
func nsChild(t *testing.T, script string) (ino uint32, run func(), done <-chan struct{}) {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testenv.Unavailable(t, "unshare (util-linux) not installed")
	}
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "--kill-child", "--",
		"/bin/sh", "-c", "echo ready; read x; "+script)
	stdin, _ := cmd.StdinPipe()
	r := testenv.StartReady(t, cmd)
	fi, err := os.Stat("/proc/" + strconv.Itoa(r.PID) + "/ns/pid_for_children")
	if err != nil {
		t.Fatal(err)
	}
	return uint32(fi.Sys().(*syscall.Stat_t).Ino), func() { io.WriteString(stdin, "go\n") }, r.Done
}

// TestPIDNamespaceEvents: loaded for a child PID namespace, the exec
// tracepoint reports that namespace's processes with the PIDs it gives
// them — a process in a namespace nested below it too — and nothing of
// the processes outside it.
func TestPIDNamespaceEvents(t *testing.T) {
	testenv.RequirePrivileged(t)
	// In the fresh namespace: sh is 1, true 2, unshare 3, and unshare's
	// child 4 (PID 1 of the nested namespace) runs env.
	ino, run, done := nsChild(t, "/bin/true; unshare --pid --fork /usr/bin/env true")
	if ino == InitPIDNamespace {
		t.Fatal("the child's namespace is the initial one")
	}
	k, err := Load(Options{PIDNamespace: ino})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.PIDNamespace() != ino {
		t.Fatalf("PIDNamespace() = %d, want %d", k.PIDNamespace(), ino)
	}
	if err := k.AttachTracepoints(); err != nil {
		t.Fatal(err)
	}
	rd, err := k.ExecEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	// A process of the host, exec'd while the namespace's run.
	host := exec.Command("/bin/true")
	run()
	if err := host.Run(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("namespace shell did not finish")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	got := map[string][]uint32{}
	for {
		rd.SetDeadline(time.Now().Add(200 * time.Millisecond))
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if ctx.Err() != nil || len(got["/usr/bin/env"]) > 0 {
				break
			}
			continue
		}
		if err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				break
			}
			t.Fatal(err)
		}
		ev, err := ParseExecEvent(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != EventExec {
			continue
		}
		name := Filename(&ev)
		got[name] = append(got[name], ev.Pid)
		if ev.Pid != ev.Tid {
			t.Errorf("exec of %s: pid %d tid %d", name, ev.Pid, ev.Tid)
		}
		if int(ev.Pid) == host.Process.Pid {
			t.Errorf("exec of the host's %s (pid %d) reported to a daemon of another namespace", name, ev.Pid)
		}
	}
	t.Logf("exec events (filename: PIDs): %v", got)
	want := map[string]uint32{"/bin/true": 2, "/usr/bin/env": 4}
	for name, pid := range want {
		if len(got[name]) != 1 || got[name][0] != pid {
			t.Errorf("exec of %s reported as %v, want once with pid %d", name, got[name], pid)
		}
	}
	for name := range got {
		if !strings.HasPrefix(name, "/") {
			t.Errorf("odd exec filename %q", name)
		}
	}
}

// TestLoadForChildNamespace: the programs that walk struct pid (a daemon
// in a child PID namespace) pass the verifier too.
func TestLoadForChildNamespace(t *testing.T) {
	testenv.RequirePrivileged(t)
	ino, _, _ := nsChild(t, "true")
	k, err := Load(Options{PIDNamespace: ino})
	if err != nil {
		t.Fatalf("load for namespace %d: %v", ino, err)
	}
	k.Close()
	m, err := loadMapOpsIn(ino)
	if err != nil {
		t.Fatalf("load map-op programs for namespace %d: %v", ino, err)
	}
	m.Close()
}
