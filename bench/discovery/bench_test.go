// Package discovery measures what watching a host costs the daemon: 200
// idle Go processes of 100 distinct binaries (Go 1.19, 1.26 stripped and
// not, 1.27), started after the daemon so each binary's first exec is held
// and probed; then the daemon's CPU over an idle window, its memory, and
// the exec -> probed latency of the 100 binaries. Root only:
//
//	go test -run XXX -bench . -benchtime 1x ./bench/discovery [-args -window 2m]
//
// Results and the machine go in docs/discovery.md.
package discovery

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/bench/benchenv"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

var window = flag.Duration("window", time.Minute, "idle window the daemon's CPU is measured over")

const (
	binaries = 100
	perBin   = 2
)

func BenchmarkIdleHost(b *testing.B) {
	testenv.RequirePrivileged(b)
	src, _ := filepath.Abs("../../testdata/victims/crash")
	tmp := b.TempDir()
	var builds []string
	for i, v := range []struct {
		tc    string
		extra []string
	}{{"go1.19", nil}, {"go1.26", nil}, {"go1.26", []string{"-ldflags=-s -w"}}, {"go1.27", nil}} {
		out := filepath.Join(tmp, fmt.Sprintf("build%d", i))
		testenv.BuildGo(b, src, v.tc, out, nil, v.extra...)
		builds = append(builds, out)
	}
	scope := filepath.Join(tmp, "scope")
	os.Mkdir(scope, 0o755)
	var paths []string
	for i := 0; i < binaries; i++ {
		data, err := os.ReadFile(builds[i%len(builds)])
		if err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(scope, fmt.Sprintf("svc%03d", i))
		if err := os.WriteFile(p, data, 0o755); err != nil {
			b.Fatal(err)
		}
		paths = append(paths, p)
	}
	d := benchenv.StartDaemon(b, benchenv.BuildMapsentry(b), scope)
	d.RequireGate(b)
	b.Logf("machine: %s", benchenv.Machine())
	_, peakStart := d.Memory(b)

	var procs []*exec.Cmd
	b.Cleanup(func() {
		for _, c := range procs {
			c.Process.Signal(syscall.SIGCONT)
			c.Process.Kill()
			c.Wait()
		}
	})
	for _, p := range paths {
		for j := 0; j < perBin; j++ {
			cmd := exec.Command(p, "sleep")
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			// Its identity line: it is running (and past its exec).
			if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || !strings.HasPrefix(line, "pid=") {
				b.Fatalf("%s: %q %v", p, line, err)
			}
			procs = append(procs, cmd)
		}
	}
	// Every binary probed, every process listed.
	var probed []time.Duration
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		probed = probed[:0]
		pids, viaGate := 0, 0
		for _, bin := range d.Binaries(b) {
			if len(bin.Probes) > 0 {
				probed = append(probed, time.Duration(bin.ProbedAfterNS))
				pids += len(bin.PIDs)
				if bin.FoundBy == "exec-gate" {
					viaGate++
				}
			}
		}
		if len(probed) == binaries && pids == binaries*perBin {
			b.Logf("%d binaries probed (%d held by the exec gate), %d processes listed", len(probed), viaGate, pids)
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d binaries probed, %d processes listed; want %d and %d", len(probed), pids, binaries, binaries*perBin)
		}
	}
	time.Sleep(10 * time.Second) // past the DWARF refinements
	ds0, ticks0, cpu0, t0 := d.Discovery(b), d.CPU(b), d.ExecTime(b), time.Now()
	time.Sleep(*window)
	cpu1, ticks1, t1, ds1 := d.ExecTime(b), d.CPU(b), time.Now(), d.Discovery(b)
	rss, peak := d.Memory(b)
	pct := 100 * float64(cpu1-cpu0) / float64(t1.Sub(t0))
	b.Logf("CPU by ticks (utime+stime, 10 ms each): %s = %.3f%%", ticks1-ticks0, 100*float64(ticks1-ticks0)/float64(t1.Sub(t0)))
	b.ReportMetric(pct, "cpu-%")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MB")
	b.ReportMetric(float64(benchenv.Percentile(probed, 50).Microseconds())/1000, "probed-p50-ms")
	b.ReportMetric(float64(benchenv.Percentile(probed, 99).Microseconds())/1000, "probed-p99-ms")
	b.Logf("%d idle processes of %d binaries: daemon CPU %.3f%% over %s (%s), RSS %.1f MB (peak %.1f MB; %.1f MB before the processes)",
		binaries*perBin, binaries, pct, t1.Sub(t0).Round(time.Second), cpu1-cpu0, float64(rss)/(1<<20), float64(peak)/(1<<20), float64(peakStart)/(1<<20))
	// On a shared machine other users' execs are the daemon's work too:
	// every exec on the host raises an exec event, every new file a gate
	// event.
	b.Logf("during the window, host-wide: %d exec events, %d gate events, %d files read, %d rescans",
		ds1.ExecEvents-ds0.ExecEvents, ds1.Gate.Events-ds0.Gate.Events, ds1.Inspected-ds0.Inspected, ds1.Scans-ds0.Scans)
	// The same window with a known storm of execs added: the daemon's
	// CPU per host exec event, and so what it spends with no exec at all.
	ds2, cpu2, t2 := d.Discovery(b), d.ExecTime(b), time.Now()
	for time.Since(t2) < *window {
		exec.Command("/bin/true").Run()
		time.Sleep(5 * time.Millisecond)
	}
	cpu3, t3, ds3 := d.ExecTime(b), time.Now(), d.Discovery(b)
	ev1, ev2 := float64(ds1.ExecEvents-ds0.ExecEvents), float64(ds3.ExecEvents-ds2.ExecEvents)
	if ev2 > ev1 {
		perEvent := (float64(cpu3-cpu2)/float64(t3.Sub(t2)) - float64(cpu1-cpu0)/float64(t1.Sub(t0))) /
			(ev2/float64(t3.Sub(t2)) - ev1/float64(t1.Sub(t0)))
		idlePct := pct - 100*perEvent*ev1/float64(t1.Sub(t0))
		// perEvent is in CPU nanoseconds per exec event.
		b.ReportMetric(perEvent/1e3, "cpu-us/exec-event")
		b.ReportMetric(idlePct, "cpu-%-no-execs")
		b.Logf("with %d more execs over %s: %s of CPU per host exec event; without any exec on the host: %.3f%% (estimated)",
			int(ev2-ev1), t3.Sub(t2).Round(time.Second), time.Duration(perEvent), idlePct)
	}
	b.Logf("exec -> probed: p50 %s, p99 %s, max %s", benchenv.Percentile(probed, 50), benchenv.Percentile(probed, 99), benchenv.Percentile(probed, 100))
	b.Logf("machine at the end: %s", benchenv.Machine())
}
