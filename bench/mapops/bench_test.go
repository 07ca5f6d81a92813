// Package mapops measures what a map-op probe costs a Go program: ns per
// map write with no probe, with the flight recorder's program armed at its
// placement past the prologue, with an empty program at the same address
// (the kernel's floor for a uprobe hit there) and at offset 0 (the entry's
// CMPQ, single-stepped); the kernel's three ways of handling a uprobe hit
// (UprobeSites); and the throughput of a map-heavy program with a daemon in
// mapops.mode on-crash and no crash against no daemon. Root only:
//
//	go test -run XXX -bench . -benchtime 1x ./bench/mapops
//
// Results and the machine go in docs/mapops.md.
package mapops

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/probes"
)

// reps runs of the victim make one measurement (their median); rounds
// measurements of each probe condition are interleaved.
const (
	reps   = 3
	rounds = 5
)

func median(xs []float64) float64 {
	ys := append([]float64{}, xs...)
	sort.Float64s(ys)
	return ys[len(ys)/2]
}

// run runs the victim reps times with n writes and returns the median ns
// per write.
func run(b *testing.B, bin string, n int) float64 {
	return runArgs(b, bin, "ns_per_write=", strconv.Itoa(n))
}

// runArgs runs bin reps times and returns the median of the number it
// prints after prefix.
func runArgs(b *testing.B, bin, prefix string, args ...string) float64 {
	b.Helper()
	var xs []float64
	for i := 0; i < reps; i++ {
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			b.Fatalf("victim: %v", err)
		}
		v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), prefix)
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			b.Fatalf("victim output %q", out)
		}
		xs = append(xs, f)
	}
	return median(xs)
}

func build(b *testing.B, tc string) string {
	b.Helper()
	testenv.RequirePrivileged(b)
	bin := filepath.Join(b.TempDir(), "victim-"+tc)
	testenv.BuildGo(b, "victim", tc, bin, nil)
	return bin
}

// placement is mapassign_fast64's map-op probe as the daemon plans it.
func placement(b *testing.B, bin string) probes.MapOpProbe {
	b.Helper()
	bi, err := probes.Inspect(bin)
	if err != nil {
		b.Fatal(err)
	}
	defer bi.Close()
	f, err := os.Open(bin)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	plan, err := bi.PlanMapOps(f)
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range plan.Probes {
		if p.Name == "runtime.mapassign_fast64" {
			return p
		}
	}
	b.Fatalf("mapassign_fast64 not planned: %+v", plan)
	return probes.MapOpProbe{}
}

// attach puts prog at p's function + off, through a uprobe_multi link (what
// the daemon uses) or a perf-event uprobe (its fallback before Linux 6.6).
func attach(b *testing.B, bin string, prog *ebpf.Program, multi bool, p probes.MapOpProbe, off uint64, cookie uint64) link.Link {
	b.Helper()
	ex, err := link.OpenExecutable(bin)
	if err != nil {
		b.Fatal(err)
	}
	var l link.Link
	if multi {
		l, err = ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{
			Addresses: []uint64{p.FileOffset - p.Offset + off}, Cookies: []uint64{cookie}})
	} else {
		l, err = ex.Uprobe(p.Name, prog, &link.UprobeOptions{Address: p.FileOffset - p.Offset, Offset: off, Cookie: cookie})
	}
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkMapWrite reports ns per map write in each condition, per
// toolchain (Go 1.26 probes PUSHQ BP; Go 1.19 builds its frame with SUB,
// so its probe sits on the JBE).
func BenchmarkMapWrite(b *testing.B) {
	for _, tc := range []string{"go1.26", "go1.19"} {
		b.Run(tc, func(b *testing.B) {
			bin := build(b, tc)
			p := placement(b, bin)
			mo, err := bpf.LoadMapOps()
			if err != nil {
				b.Fatal(err)
			}
			defer mo.Close()
			cookie := bpf.MapOpCookie(1, bpf.MapArg1, bpf.MapOpAssign)
			// Armed and the empty program at the same address alternate
			// for several rounds: this VM's uprobe cost drifts by ~15%
			// between minutes, more than the difference measured.
			res := map[string]float64{}
			res["none"] = run(b, bin, 20_000_000)
			multi, err := mo.MultiProgram()
			if err != nil {
				b.Fatal(err)
			}
			conds := []struct {
				name  string
				prog  *ebpf.Program
				multi bool
				off   uint64
				n     int
			}{
				{"armed", multi, true, p.Offset, 1_000_000},
				{"empty_same_address", mo.EmptyMultiProgram(), true, p.Offset, 1_000_000},
				{"empty_offset0", mo.EmptyMultiProgram(), true, 0, 200_000},
				{"armed_offset0", multi, true, 0, 200_000},
				{"perf_armed", mo.Program(), false, p.Offset, 1_000_000},
				{"perf_empty_same_address", mo.EmptyProgram(), false, p.Offset, 1_000_000},
				{"perf_empty_offset0", mo.EmptyProgram(), false, 0, 200_000},
			}
			samples := map[string][]float64{}
			for round := 0; round < rounds; round++ {
				for _, c := range conds {
					l := attach(b, bin, c.prog, c.multi, p, c.off, cookie)
					samples[c.name] = append(samples[c.name], run(b, bin, c.n))
					l.Close()
				}
			}
			for k, xs := range samples {
				res[k] = median(xs)
			}
			res["unarmed_after_detach"] = run(b, bin, 20_000_000)
			for k, v := range res {
				b.ReportMetric(v, "ns/write_"+k)
			}
			b.Logf("%s: probe at %s+%d (%s)", tc, p.Name, p.Offset, p.At)
			b.Logf("%s: none %.1f ns, armed %.0f ns, empty same address %.0f ns (armed/empty %.2f), empty at offset 0 %.0f ns (offset0/armed %.1f), armed at offset 0 %.0f ns, after detach %.1f ns",
				tc, res["none"], res["armed"], res["empty_same_address"], res["armed"]/res["empty_same_address"],
				res["empty_offset0"], res["empty_offset0"]/res["armed"], res["armed_offset0"], res["unarmed_after_detach"])
			b.Logf("%s: perf-event uprobes (the fallback): armed %.0f ns, empty same address %.0f ns (armed/empty %.2f), empty at offset 0 %.0f ns (offset0/armed %.1f)",
				tc, res["perf_armed"], res["perf_empty_same_address"], res["perf_armed"]/res["perf_empty_same_address"],
				res["perf_empty_offset0"], res["perf_empty_offset0"]/res["perf_armed"])
		})
	}
}

// BenchmarkUprobeSites measures the kernel's three ways of handling a
// uprobe hit on x86, each with the empty program on a one-instruction site
// (bench/mapops/sites): a 5-byte NOP (Linux 6.18 rewrites it into a call
// to its uprobe trampoline: no trap), PUSHQ BP (INT3 trap, instruction
// emulated: where map-op probes go) and the stack check CMPQ at a Go
// function's entry (INT3 trap, then single-stepped: offset 0). It bounds
// what any placement can gain over offset 0.
func BenchmarkUprobeSites(b *testing.B) {
	testenv.RequirePrivileged(b)
	bin := filepath.Join(b.TempDir(), "sites")
	testenv.BuildGo(b, "sites", "go1.26", bin, nil)
	f, err := elf.Open(bin)
	if err != nil {
		b.Fatal(err)
	}
	syms, err := f.Symbols()
	if err != nil {
		b.Fatal(err)
	}
	fileOff := func(name string) uint64 {
		for _, s := range syms {
			if s.Name != name {
				continue
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && s.Value >= p.Vaddr && s.Value < p.Vaddr+p.Filesz {
					return s.Value - p.Vaddr + p.Off
				}
			}
		}
		b.Fatalf("%s not in %s", name, bin)
		return 0
	}
	mo, err := bpf.LoadMapOps()
	if err != nil {
		b.Fatal(err)
	}
	defer mo.Close()
	ex, err := link.OpenExecutable(bin)
	if err != nil {
		b.Fatal(err)
	}
	sites := []struct {
		site string
		n    int
	}{{"nop5", 2_000_000}, {"push", 2_000_000}, {"cmp", 300_000}}
	samples := map[string][]float64{}
	for round := 0; round < rounds; round++ {
		for _, s := range sites {
			off := fileOff("main." + s.site + ".abi0")
			l, err := ex.UprobeMulti(nil, mo.EmptyMultiProgram(), &link.UprobeMultiOptions{Addresses: []uint64{off}})
			if err != nil {
				b.Fatal(err)
			}
			samples[s.site] = append(samples[s.site], runArgs(b, bin, "ns_per_call=", s.site, strconv.Itoa(s.n)))
			l.Close()
		}
	}
	res := map[string]float64{}
	for _, s := range sites {
		res[s.site] = median(samples[s.site])
		b.ReportMetric(res[s.site], "ns/call_"+s.site)
	}
	b.Logf("empty uprobe_multi program: 5-byte NOP %.0f ns, PUSHQ BP (emulated) %.0f ns, CMPQ (single-stepped) %.0f ns; cmp/push %.1f×, cmp/nop5 %.1f×",
		res["nop5"], res["push"], res["cmp"], res["cmp"]/res["push"], res["cmp"]/res["nop5"])
}

// BenchmarkOnCrashThroughput: a map-heavy program with a daemon in mode
// on-crash (crash probes attached, no map-op probe since nothing crashed)
// against the same program without: first no daemon, then — interleaved,
// to cancel this VM's drift — a copy in the daemon's scope against a copy
// outside it while the daemon runs.
func BenchmarkOnCrashThroughput(b *testing.B) {
	bin := build(b, "go1.26")
	dir := filepath.Dir(bin)
	outside := filepath.Join(b.TempDir(), "victim-outside")
	if data, err := os.ReadFile(bin); err != nil || os.WriteFile(outside, data, 0o755) != nil {
		b.Fatalf("copy victim: %v", err)
	}
	ms := filepath.Join(b.TempDir(), "mapsentry")
	if out, err := exec.Command("go", "build", "-o", ms, "../../cmd/mapsentry").CombinedOutput(); err != nil {
		b.Fatalf("build mapsentry: %v\n%s", err, out)
	}
	state := b.TempDir()
	cfg := filepath.Join(state, "none.yaml")
	os.WriteFile(cfg, []byte("{}\n"), 0o644)
	sock := filepath.Join(state, "sock")
	d := exec.Command(ms, "daemon")
	// Its own instance name: the default one is host-wide (one daemon per host).
	d.Env = append(os.Environ(), "MAPSENTRY_INSTANCE=bench-"+strconv.Itoa(os.Getpid()), "MAPSENTRY_SOCKET="+sock, "MAPSENTRY_STATE_DIR="+filepath.Join(state, "st"),
		"MAPSENTRY_DISCOVERY_INCLUDE="+dir+"/**", "MAPSENTRY_CONFIG="+cfg, "MAPSENTRY_MAPOPS_MODE=on-crash",
		"MAPSENTRY_EXPORT_ENABLED=false", "MAPSENTRY_DISCOVERY_RESCAN=500ms")
	const n = 50_000_000
	var noDaemon, in, out []float64
	for i := 0; i < rounds; i++ {
		noDaemon = append(noDaemon, run(b, bin, n))
	}
	var logs syncBuffer
	d.Stderr = &logs
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { d.Process.Signal(os.Interrupt); d.Wait() }()
	c := client.New(sock)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.Status(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("daemon did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < rounds; i++ {
		in = append(in, run(b, bin, n))
		out = append(out, run(b, outside, n))
	}
	st, err := c.MapOps(context.Background())
	if err != nil || st.Mode != "on-crash" || st.Links != 0 {
		b.Fatalf("daemon map-op state: %+v, %v", st, err)
	}
	if !strings.Contains(logs.String(), `msg="crash probes attached" component=probes path=`+bin) {
		b.Fatalf("the in-scope victim never got crash probes; daemon log:\n%s", logs.String())
	}
	ratio := median(in) / median(out)
	b.ReportMetric(ratio, "in_scope/out_of_scope")
	b.ReportMetric(median(in)/median(noDaemon), "in_scope/no_daemon")
	b.Logf("ns per write (medians of %d): no daemon %.2f; daemon on-crash: in scope %.2f, out of scope %.2f; in/out %.3f, in/no-daemon %.3f",
		rounds, median(noDaemon), median(in), median(out), ratio, median(in)/median(noDaemon))
	b.Logf("samples: no daemon %v, in scope %v, out of scope %v", noDaemon, in, out)
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
