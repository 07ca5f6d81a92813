// Package goroutines benchmarks how long a goroutine dump keeps a process
// frozen: mapsentry's symbolizer (SIGSTOP, registers from /proc, one pass
// over allgs and the stacks, SIGCONT; symbolizing after the resume) against
// delve v1.27.2 native attach + goroutine list + stacks + detach, on the
// same 10,000-goroutine process. Run as root:
//
//	go test -run XXX -bench . -benchtime 5x ./bench/goroutines
package goroutines

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-delve/delve/pkg/proc"
	"github.com/go-delve/delve/pkg/proc/native"

	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/symbolizer"
)

const goroutines = 10000

func startVictim(b *testing.B, toolchain string, stripped bool) (string, int) {
	b.Helper()
	testenv.RequirePrivileged(b)
	bin := filepath.Join(b.TempDir(), "victim")
	var extra []string
	if stripped {
		extra = append(extra, "-ldflags=-s -w")
	}
	testenv.BuildGo(b, "../../symbolizer/testdata/victim", toolchain, bin, nil, extra...)
	cmd := exec.Command(bin, strconv.Itoa(goroutines))
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	v := testenv.StartReady(b, cmd)
	time.Sleep(200 * time.Millisecond)
	return bin, v.PID
}

func benchMapsentry(b *testing.B, toolchain string, stripped bool) {
	bin, pid := startVictim(b, toolchain, stripped)
	tg, err := probes.Inspect(bin)
	if err != nil {
		b.Fatal(err)
	}
	defer tg.Close()
	id, _ := procmem.IdentityOf(pid)
	var frozen, stopWait, regsT, copyT, copyCPU, copySys, analyse, symb time.Duration
	var each []time.Duration // frozen, per dump
	var n int
	var bytes, calls int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A fresh reader (and copy) each time, as each dump has.
		mem, err := procmem.Open(pid, 0)
		if err != nil {
			b.Fatal(err)
		}
		opt := symbolizer.CaptureOptions{Allgs: tg.Allgs}
		// Before the stop, as `mapsentry dump` does: the copy's buffer set
		// aside, its pages mapped.
		mem.Copy().Reserve(symbolizer.EstimateCopy(mem, opt))
		start := time.Now()
		resume, err := procmem.Freeze(id, 2*time.Second)
		if err != nil {
			resume()
			b.Fatal(err)
		}
		stopped := time.Now()
		regs, err := threadregs.FromProc(pid)
		if err != nil {
			resume()
			b.Fatal(err)
		}
		gotRegs := time.Now()
		cpu0, sys0 := processCPU(), systemCPU()
		opt.Deadline = time.Now().Add(2 * time.Second)
		snap, err := symbolizer.CopyGoroutines(mem.Copy(), tg.Layout, regs, opt)
		copied := time.Now()
		copyCPU += processCPU() - cpu0
		copySys += systemCPU() - sys0
		if rerr := resume(); rerr != nil || err != nil {
			b.Fatal(err, rerr)
		}
		frozen += copied.Sub(start)
		each = append(each, copied.Sub(start))
		stopWait += stopped.Sub(start)
		regsT += gotRegs.Sub(stopped)
		copyT += copied.Sub(gotRegs)
		s0 := time.Now()
		if err := snap.Analyse(mem.Copy().Image(), tg.Table); err != nil {
			b.Fatal(err)
		}
		s1 := time.Now()
		n = len(snap.Symbolize(tg.Table))
		analyse += s1.Sub(s0)
		symb += time.Since(s1)
		st := mem.Copy().Stats()
		bytes, calls = st.Bytes, st.Calls
		mem.Close()
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(frozen), "frozen-ms/op")
	slices.Sort(each)
	b.ReportMetric(float64(each[len(each)/2].Microseconds())/1000, "frozen-median-ms")
	b.ReportMetric(float64(each[len(each)-1].Microseconds())/1000, "frozen-max-ms")
	b.ReportMetric(ms(stopWait), "stop-wait-ms/op")
	b.ReportMetric(ms(regsT), "regs-ms/op")
	b.ReportMetric(ms(copyT), "copy-ms/op")
	b.ReportMetric(ms(copyCPU), "copy-cpu-ms/op")
	b.ReportMetric(ms(copySys), "copy-kernel-cpu-ms/op")
	b.ReportMetric(ms(analyse), "unwind-after-resume-ms/op")
	b.ReportMetric(ms(symb), "symbolize-after-resume-ms/op")
	b.ReportMetric(float64(bytes)/1e6, "copied-MB")
	b.ReportMetric(float64(calls), "copy-syscalls")
	b.ReportMetric(float64(n), "goroutines")
}

// processCPU is the CPU time this process used so far (user and system,
// every thread): on a loaded machine the copy's wall time depends on the
// other load, its CPU time does not.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// systemCPU is the kernel part of processCPU.
func systemCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Stime.Nano())
}

func BenchmarkMapsentryGo126(b *testing.B)         { benchMapsentry(b, "go1.26", false) }
func BenchmarkMapsentryGo126Stripped(b *testing.B) { benchMapsentry(b, "go1.26", true) }
func BenchmarkMapsentryGo119(b *testing.B)         { benchMapsentry(b, "go1.19", false) }
func BenchmarkMapsentryGo127(b *testing.B)         { benchMapsentry(b, "go1.27", false) }

// BenchmarkDelveGo126 is delve's live path: the process is stopped from
// attach until detach.
func BenchmarkDelveGo126(b *testing.B) {
	_, pid := startVictim(b, "go1.26", false)
	var frozen, list time.Duration
	var each []time.Duration
	var n int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		grp, err := native.Attach(pid, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		gs, _, err := proc.GoroutinesInfo(grp.Selected, 0, 0)
		if err != nil {
			grp.Detach(false)
			b.Fatal(err)
		}
		list += time.Since(start)
		for _, g := range gs {
			_, _ = proc.GoroutineStacktrace(grp.Selected, g, 50, 0)
		}
		n = len(gs)
		if err := grp.Detach(false); err != nil {
			b.Fatal(err)
		}
		frozen += time.Since(start)
		each = append(each, time.Since(start))
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(frozen), "frozen-ms/op")
	slices.Sort(each)
	b.ReportMetric(float64(each[len(each)/2].Microseconds())/1000, "frozen-median-ms")
	b.ReportMetric(float64(each[len(each)-1].Microseconds())/1000, "frozen-max-ms")
	b.ReportMetric(ms(list), "attach+list-ms/op")
	b.ReportMetric(float64(n), "goroutines")
}
