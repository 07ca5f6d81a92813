// Package attach measures how soon after exec a Go binary is covered: a
// victim that dies of concurrent map writes DELAY ms after it starts, run
// under a daemon (exec gate on, its default), each run from a fresh copy (a
// new inode, never seen: nothing is attached before it runs); and re-runs
// of binaries that sat idle (their probes must still be there, nothing
// read again). Root only:
//
//	go test -run XXX -bench . -benchtime 1x ./bench/attach
//	go test -run XXX -bench Rerun -benchtime 1x ./bench/attach -args -idle 10m
//
// Results and the machine go in docs/discovery.md.
package attach

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/bench/benchenv"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

var idle = flag.Duration("idle", 15*time.Second, "how long re-run binaries sit idle before running again (the issue's figure: 10m)")

const reps = 10

type env struct {
	d     *benchenv.Daemon
	scope string
	data  []byte // the victim binary
	n     int
}

func setup(b *testing.B) *env {
	testenv.RequirePrivileged(b)
	tmp := b.TempDir()
	victim := filepath.Join(tmp, "victim")
	testenv.BuildGo(b, "victim", "go1.26", victim, nil)
	e := &env{scope: filepath.Join(tmp, "scope")}
	os.Mkdir(e.scope, 0o755)
	var err error
	if e.data, err = os.ReadFile(victim); err != nil {
		b.Fatal(err)
	}
	e.d = benchenv.StartDaemon(b, benchenv.BuildMapsentry(b), e.scope)
	e.d.RequireGate(b)
	return e
}

// fresh writes a new copy of the victim: a new inode.
func (e *env) fresh(b *testing.B) string {
	e.n++
	path := filepath.Join(e.scope, fmt.Sprintf("v%d", e.n))
	if err := os.WriteFile(path, e.data, 0o755); err != nil {
		b.Fatal(err)
	}
	return path
}

// crash runs path, which dies delay ms after it starts, and reports
// whether the daemon captured that crash.
func (e *env) crash(b *testing.B, path string, delay int) bool {
	cmd := exec.Command(path, strconv.Itoa(delay))
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		b.Fatalf("victim: %v (exit %v)", err, cmd.ProcessState)
	}
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		cs, err := e.d.C.Crashes(context.Background(), 50)
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

func BenchmarkCrashAfterExec(b *testing.B) {
	e := setup(b)
	b.Logf("machine: %s", benchenv.Machine())
	var probed []time.Duration
	foundBy := map[string]int{}
	for _, delay := range []int{0, 1, 5, 10, 20} {
		got := 0
		for i := 0; i < reps; i++ {
			path := e.fresh(b)
			if e.crash(b, path, delay) {
				got++
			}
			for _, bin := range e.d.Binaries(b) {
				if bin.Path == path {
					probed = append(probed, time.Duration(bin.ProbedAfterNS))
					foundBy[bin.FoundBy]++
				}
			}
		}
		b.ReportMetric(float64(got)/reps, fmt.Sprintf("captured@%dms", delay))
		b.Logf("crash %2d ms after exec of a never-seen binary: captured %d of %d", delay, got, reps)
	}
	g := e.d.Discovery(b).Gate
	b.ReportMetric(float64(benchenv.Percentile(probed, 50).Microseconds())/1000, "probed-p50-ms")
	b.ReportMetric(float64(benchenv.Percentile(probed, 99).Microseconds())/1000, "probed-p99-ms")
	b.Logf("exec -> probed (first sighting to probes attached, %d binaries, found by %v): p50 %s, p99 %s, max %s; gate: %d execs held, %d allowed at the deadline",
		len(probed), foundBy, benchenv.Percentile(probed, 50), benchenv.Percentile(probed, 99), benchenv.Percentile(probed, 100), g.Held, g.DeadlineHit)
	b.Logf("machine at the end: %s", benchenv.Machine())
}

// BenchmarkRerunAfterIdle: ten binaries run once, sit idle for -idle, and
// run again (dying at once): every re-run must be captured, and none read
// again.
func BenchmarkRerunAfterIdle(b *testing.B) {
	e := setup(b)
	b.Logf("machine: %s; idle %s", benchenv.Machine(), *idle)
	var paths []string
	first := 0
	for i := 0; i < reps; i++ {
		paths = append(paths, e.fresh(b))
		if e.crash(b, paths[i], 0) {
			first++
		}
	}
	inspected := e.d.Discovery(b).Inspected
	time.Sleep(*idle)
	got := 0
	for _, p := range paths {
		if e.crash(b, p, 0) {
			got++
		}
	}
	if again := e.d.Discovery(b).Inspected; again != inspected {
		b.Errorf("binaries read again after idle: %d inspections before, %d after", inspected, again)
	}
	b.ReportMetric(float64(got)/reps, "captured-rerun")
	b.Logf("first runs captured %d of %d; re-runs after %s idle captured %d of %d; %d inspections in all (none again)",
		first, reps, *idle, got, reps, inspected)
}
