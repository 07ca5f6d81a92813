// Package attach measures how soon after exec a new Go binary is covered:
// a victim that dies of concurrent map writes DELAY ms after it starts,
// each run from a fresh copy (a new inode, so no probe is attached yet),
// under a running daemon; the share of those crashes that were captured,
// per delay. Root only:
//
//	go test -run XXX -bench . -benchtime 1x ./bench/attach
//
// Results and the machine go in docs/architecture.md.
package attach

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

const reps = 10

func BenchmarkCrashAfterExec(b *testing.B) {
	testenv.RequirePrivileged(b)
	tmp := b.TempDir()
	victim := filepath.Join(tmp, "victim")
	testenv.BuildGo(b, "victim", "go1.26", victim, nil)
	ms := filepath.Join(tmp, "mapsentry")
	if out, err := exec.Command("go", "build", "-o", ms, "../../cmd/mapsentry").CombinedOutput(); err != nil {
		b.Fatalf("build mapsentry: %v\n%s", err, out)
	}
	scope := filepath.Join(tmp, "scope")
	os.Mkdir(scope, 0o755)
	cfg := filepath.Join(tmp, "none.yaml")
	os.WriteFile(cfg, []byte("{}\n"), 0o644)
	sock := filepath.Join(tmp, "sock")
	d := exec.Command(ms, "daemon")
	// Its own instance name: the default one is host-wide (one daemon per host).
	d.Env = append(os.Environ(), "MAPSENTRY_INSTANCE=bench-"+strconv.Itoa(os.Getpid()), "MAPSENTRY_SOCKET="+sock, "MAPSENTRY_STATE_DIR="+filepath.Join(tmp, "st"),
		"MAPSENTRY_DISCOVERY_INCLUDE="+scope+"/**", "MAPSENTRY_CONFIG="+cfg, "MAPSENTRY_EXPORT_ENABLED=false")
	d.Stderr = io.Discard
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { d.Process.Signal(os.Interrupt); d.Wait() }()
	c := client.New(sock)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := c.Status(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("daemon did not start")
		}
	}
	data, err := os.ReadFile(victim)
	if err != nil {
		b.Fatal(err)
	}
	captured := func(pid int) bool {
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			cs, err := c.Crashes(context.Background(), 50)
			if err != nil {
				continue
			}
			for _, cr := range cs {
				if cr.Process.PID == pid {
					return true
				}
			}
		}
		return false
	}
	n := 0
	for _, delay := range []int{0, 5, 10, 20, 50, 100, 200} {
		got := 0
		for i := 0; i < reps; i++ {
			n++
			// A fresh inode: nothing is attached to it before it runs.
			path := filepath.Join(scope, fmt.Sprintf("v%d", n))
			if err := os.WriteFile(path, data, 0o755); err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(path, strconv.Itoa(delay))
			if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
				b.Fatalf("victim: %v (exit %v)", err, cmd.ProcessState)
			}
			if captured(cmd.Process.Pid) {
				got++
			}
			os.Remove(path)
		}
		b.ReportMetric(float64(got)/reps, fmt.Sprintf("captured@%dms", delay))
		b.Logf("crash %3d ms after exec: captured %d of %d", delay, got, reps)
	}
}
