// Package execgate measures what the exec gate costs the execs it holds:
// the steady cost for files already seen (1,000 execs of /bin/true with and
// without a daemon), and the wait of the first exec of a never-seen 100 MB
// Go binary (20 fresh copies: each is held until it is read and probed).
// Root only:
//
//	go test -run XXX -bench . -benchtime 1x -timeout 30m ./bench/execgate
//
// The 100 MB binary (40,000 functions and 90 MB of embedded data) is
// generated and built once into $TMPDIR/mapsentry-bench-bigbinary (a few
// minutes the first time). Results and the machine go in docs/discovery.md.
package execgate

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/bench/benchenv"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

const trueRuns = 1000

func runTrue(b *testing.B, n int) time.Duration {
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(t0)
}

var rounds = flag.Int("rounds", 5, "BenchmarkExecTrue: rounds of (without, with) the daemon")

// BenchmarkExecTrue: rounds of 1,000 execs of /bin/true without a daemon,
// then with one (after the first exec, which the gate reads once and
// marks ignored). One round alone does not resolve 5 %: two runs without
// the daemon a minute apart differ by up to 20 % on this VM. So the
// rounds alternate, each ratio is taken within its round, and the median
// ratio is the figure.
func BenchmarkExecTrue(b *testing.B) {
	testenv.RequirePrivileged(b)
	ms := benchenv.BuildMapsentry(b)
	b.Logf("machine: %s", benchenv.Machine())
	runTrue(b, 50) // warm up
	var ratios []float64
	var events uint64
	for r := 0; r < *rounds; r++ {
		without := runTrue(b, trueRuns)
		d := benchenv.StartDaemon(b, ms, b.TempDir())
		d.RequireGate(b)
		runTrue(b, 1) // the first: held once, then ignored
		before := d.Discovery(b).Gate
		with := runTrue(b, trueRuns)
		after := d.Discovery(b).Gate
		d.Stop()
		events += after.Events - before.Events
		ratios = append(ratios, float64(with)/float64(without))
		b.Logf("round %d: %d execs of /bin/true without %s, with the daemon %s: ratio %.3f; gate events during them: %d",
			r, trueRuns, without.Round(time.Millisecond), with.Round(time.Millisecond), ratios[r], after.Events-before.Events)
	}
	sort.Float64s(ratios)
	med := ratios[len(ratios)/2]
	b.ReportMetric(med, "ratio")
	b.Logf("ratio with/without: median %.3f, min %.3f, max %.3f over %d rounds; gate events during the timed execs: %d",
		med, ratios[0], ratios[len(ratios)-1], len(ratios), events)
	b.Logf("machine at the end: %s", benchenv.Machine())
}

// BenchmarkFirstExecLarge: 20 fresh copies of a 100 MB Go binary, each
// exec'd once without a daemon, then 20 more with one: how long each exec
// took to start (fork to the new program running), and how long the gate
// held it (its event to its probes attached).
func BenchmarkFirstExecLarge(b *testing.B) {
	testenv.RequirePrivileged(b)
	big := bigBinary(b)
	ms := benchenv.BuildMapsentry(b)
	st, _ := os.Stat(big)
	data, err := os.ReadFile(big)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("machine: %s; binary %d MB", benchenv.Machine(), st.Size()>>20)
	scope := b.TempDir()
	n := 0
	startAll := func(copies int) (starts []time.Duration, paths []string) {
		for i := 0; i < copies; i++ {
			n++
			path := filepath.Join(scope, fmt.Sprintf("big%d", n))
			if err := os.WriteFile(path, data, 0o755); err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(path)
			t0 := time.Now()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			starts = append(starts, time.Since(t0))
			if err := cmd.Wait(); err != nil {
				b.Fatalf("%s: %v", path, err)
			}
			paths = append(paths, path)
		}
		return starts, paths
	}
	const copies = 20
	without, oldPaths := startAll(copies)
	for _, p := range oldPaths {
		os.Remove(p)
	}
	d := benchenv.StartDaemon(b, ms, scope, "MAPSENTRY_LOG_LEVEL=debug")
	d.RequireGate(b)
	with, paths := startAll(copies)
	var held []time.Duration
	for _, bin := range d.Binaries(b) {
		for _, p := range paths {
			if bin.Path == p {
				if len(bin.Probes) == 0 || bin.FoundBy != "exec-gate" {
					b.Errorf("%s: probes %v, found by %s (%s)", p, bin.Probes, bin.FoundBy, bin.Error)
				}
				held = append(held, time.Duration(bin.ProbedAfterNS))
			}
		}
	}
	if len(held) != copies {
		b.Errorf("%d of %d copies probed", len(held), copies)
	}
	g := d.Discovery(b).Gate
	b.ReportMetric(float64(benchenv.Percentile(held, 99).Microseconds())/1000, "held-p99-ms")
	b.ReportMetric(float64(benchenv.Percentile(with, 99).Microseconds())/1000, "start-p99-ms-with")
	b.ReportMetric(float64(benchenv.Percentile(without, 99).Microseconds())/1000, "start-p99-ms-without")
	b.Logf("first exec of a never-seen %d MB Go binary, %d fresh copies:", st.Size()>>20, copies)
	b.Logf("  held by the gate (event -> probes attached): p50 %s, p99 %s, max %s; %d allowed at the deadline",
		benchenv.Percentile(held, 50), benchenv.Percentile(held, 99), benchenv.Percentile(held, 100), g.DeadlineHit)
	b.Logf("  exec start (fork -> running) with the daemon: p50 %s, p99 %s; without: p50 %s, p99 %s",
		benchenv.Percentile(with, 50), benchenv.Percentile(with, 99), benchenv.Percentile(without, 50), benchenv.Percentile(without, 99))
	// Where the slowest hold went: queueing, reading the binary, attaching.
	slowest, at := time.Duration(0), ""
	for _, bin := range d.Binaries(b) {
		if time.Duration(bin.ProbedAfterNS) > slowest {
			slowest, at = time.Duration(bin.ProbedAfterNS), bin.Path
		}
	}
	for _, line := range strings.Split(d.Log(), "\n") {
		if strings.Contains(line, "path="+at+" ") && (strings.Contains(line, "msg=inspected") || strings.Contains(line, "msg=attached")) {
			b.Logf("  slowest (%s): %s", slowest, line[strings.Index(line, "msg="):])
		}
	}
	b.Logf("machine at the end: %s", benchenv.Machine())
}

// bigBinary generates and builds (once per machine) a Go program of
// 40,000 functions with 90 MB of embedded data: over 100 MB.
func bigBinary(b *testing.B) string {
	dir := filepath.Join(os.TempDir(), "mapsentry-bench-bigbinary")
	out := filepath.Join(dir, "big")
	if st, err := os.Stat(out); err == nil && st.Size() >= 100<<20 {
		return out
	}
	os.MkdirAll(dir, 0o755)
	const funcs, perFile = 40000, 2000
	write := func(name string, body []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write("go.mod", []byte("module big\n\ngo 1.22\n"))
	for k := 0; k < funcs/perFile; k++ {
		var src bytes.Buffer
		src.WriteString("package main\n\n")
		for i := k * perFile; i < (k+1)*perFile; i++ {
			fmt.Fprintf(&src, "//go:noinline\nfunc f%d(x int) int {\n\tif x > %d {\n\t\treturn x*3 + %d\n\t}\n\ts := 0\n\tfor j := 0; j < x; j++ {\n\t\ts += j ^ %d\n\t}\n\treturn s\n}\n\n", i, i, i, i)
		}
		write(fmt.Sprintf("f%d.go", k), src.Bytes())
	}
	var table bytes.Buffer
	table.WriteString("package main\n\nvar table = [...]func(int) int{\n")
	for i := 0; i < funcs; i++ {
		fmt.Fprintf(&table, "\tf%d,\n", i)
	}
	table.WriteString("}\n")
	write("table.go", table.Bytes())
	blob := make([]byte, 90<<20)
	rand.New(rand.NewSource(1)).Read(blob)
	write("blob.bin", blob)
	write("main.go", []byte(`package main

import (
	_ "embed"
	"os"
)

//go:embed blob.bin
var blob string

func main() {
	if len(os.Args) > 1 {
		println(table[len(os.Args)%len(table)](len(blob)))
	}
}
`))
	testenv.BuildGo(b, dir, "go1.26", out, nil, "-trimpath")
	if st, err := os.Stat(out); err != nil || st.Size() < 100<<20 {
		b.Fatalf("generated binary: %v, %d bytes", err, st.Size())
	}
	return out
}
