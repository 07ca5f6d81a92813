// Package hmapdecodebench measures how long decoding a live 1M-entry map
// holds the process, and how long the decode itself takes, and compares it
// with loading the same map through delve (v1.27.2, pkg/proc native
// attach). Run by hand, as root, one command each (a few minutes on a
// 2-vCPU machine; they print the tables recorded in docs/hmapdecode.md):
//
//	MAPSENTRY_BENCH=1 go test -run TestBenchReport -v -timeout 30m ./bench/hmapdecode/
//	MAPSENTRY_BENCH=1 go test -run TestBenchDaemon -v -timeout 30m ./bench/hmapdecode/
//	make bench   # runs BenchmarkLiveDecode once
//
// TestBenchReport is the library path: per decode, a fresh copy is set
// aside (its pages mapped) while the victim runs, the victim is stopped,
// the map copied (hmapdecode.Copy into procmem.Copy) and the victim
// resumed; then the copy is decoded. TestBenchDaemon is what a user runs:
// `mapsentry decode` against a daemon, with the daemon's peak RSS.
//
// Neither is part of the default test run: building 1M-entry victims and
// loading them with delve takes minutes on a 2-vCPU machine.
package hmapdecodebench

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-delve/delve/pkg/proc"
	"github.com/go-delve/delve/pkg/proc/native"

	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/symbolizer"
)

const (
	entries = 1_000_000
	runs    = 5
)

var goTypes = map[string]string{"ints": "map[int64]int64", "strs": "map[string]string"}

func TestBenchReport(t *testing.T) {
	if os.Getenv("MAPSENTRY_BENCH") != "1" {
		t.Skip("set MAPSENTRY_BENCH=1 to run the live 1M-entry benchmark")
	}
	report(t)
}

// BenchmarkLiveDecode is the same report for `make bench` (-benchtime 1x):
// one full run prints the table; b.N is not used.
func BenchmarkLiveDecode(b *testing.B) { report(b) }

// toolchains are the victims' toolchains: all supported, or the
// comma-separated MAPSENTRY_BENCH_TOOLCHAINS (e.g. go1.26).
func toolchains() []string {
	if v := os.Getenv("MAPSENTRY_BENCH_TOOLCHAINS"); v != "" {
		return strings.Split(v, ",")
	}
	return testenv.Toolchains()
}

// machine prints what every table is measured on: CPU, load, time.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	var un syscall.Utsname
	_ = syscall.Uname(&un)
	rel := make([]byte, 0, 65)
	for _, c := range un.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	return fmt.Sprintf("%s, %d vCPU, Linux %s, loadavg %s, %s", model, runtime.NumCPU(), rel,
		strings.TrimSpace(string(load)), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
}

// victim is a running bench victim: its maps' header and type addresses.
type victim struct {
	bin   *probes.Binary
	path  string
	pid   int
	addrs map[string][2]uint64
	types uint64 // moduledata.types
}

// startVictim builds the victim with toolchain tc into dir and starts it.
func startVictim(t testing.TB, tc, dir string) *victim {
	path := filepath.Join(dir, "victim-"+tc)
	src, _ := filepath.Abs("victim")
	testenv.BuildGo(t, src, tc, path, nil)
	b, err := probes.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	md, err := symbolizer.FindModuledata(ef, b.Layout.Version.Minor)
	ef.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, strconv.Itoa(entries))
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = stdin.Close()
	})
	v := &victim{bin: b, path: path, pid: cmd.Process.Pid, addrs: map[string][2]uint64{}, types: md.Types}
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "READY" {
		f := strings.Fields(sc.Text())
		a, _ := strconv.ParseUint(f[1][2:], 16, 64)
		ty, _ := strconv.ParseUint(f[2][2:], 16, 64)
		v.addrs[f[0]] = [2]uint64{a, ty}
	}
	if len(v.addrs) != 2 {
		t.Fatalf("victim printed %v", v.addrs)
	}
	return v
}

// one is one decode through the copy: held is stop → copy → resume.
type one struct {
	held, stopWait, copyT, decode time.Duration
	copied, calls, ranges         int64
	res                           *hmapdecode.Result
}

func decodeOnce(t testing.TB, v *victim, name string) one {
	id, err := procmem.IdentityOf(v.pid)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := procmem.Open(v.pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	req := hmapdecode.Request{Addr: v.addrs[name][0], Layout: v.bin.Layout, TypeAddr: v.addrs[name][1], TypesBase: v.types}
	cp := mem.Copy()
	cp.Reserve(hmapdecode.Estimate(context.Background(), mem, req)) // before the stop, as `mapsentry decode` does
	start := time.Now()
	resume, err := procmem.Freeze(id, 5*time.Second)
	if err != nil {
		_ = resume()
		t.Fatal(err)
	}
	stopped := time.Now()
	_, err = hmapdecode.Copy(context.Background(), cp, req)
	copied := time.Now()
	if rerr := resume(); rerr != nil || err != nil {
		t.Fatal(err, rerr)
	}
	o := one{held: time.Since(start), stopWait: stopped.Sub(start), copyT: copied.Sub(stopped)}
	d0 := time.Now()
	req.Limits.Budget = time.Minute
	o.res, err = hmapdecode.Decode(context.Background(), cp.Image(), req)
	o.decode = time.Since(d0)
	if err != nil {
		t.Fatal(err)
	}
	if o.res.Stats.EntriesFound != entries || len(o.res.Anomalies) != 0 {
		t.Fatalf("%s: found %d, anomalies %+v", name, o.res.Stats.EntriesFound, o.res.Anomalies)
	}
	st := cp.Stats()
	o.copied, o.calls, o.ranges = st.Bytes, st.Calls, int64(st.Ranges)
	return o
}

type stat struct{ min, med, max time.Duration }

func stats(ds []time.Duration) stat {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return stat{s[0], s[len(s)/2], s[len(s)-1]}
}

func (s stat) String() string {
	return fmt.Sprintf("%.1f (%.1f–%.1f, ×%.1f)", ms(s.med), ms(s.min), ms(s.max), float64(s.max)/float64(max(s.min, 1)))
}

func report(t testing.TB) {
	testenv.RequirePrivileged(t)
	fmt.Printf("machine: %s\n\n", machine())
	fmt.Printf("| toolchain | map | layout | held ms: stop + copy + resume | copy ms | decode of the copy ms | first (cold) held / decode ms | copied | system calls | map footprint | copied/footprint | delve load | delve/held |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	dir := t.TempDir()
	for _, tc := range toolchains() {
		v := startVictim(t, tc, dir)
		type row struct {
			name                string
			held, copyT, decode stat
			cold                one
			copied, calls, foot int64
			layout              string
		}
		var rows []row
		for _, name := range []string{"ints", "strs"} {
			var held, copyT, decode []time.Duration
			// The first copy in a process writes pages it never used
			// (docs/copy.md): reported apart, not among the 5.
			cold := decodeOnce(t, v, name)
			var last one
			for i := 0; i < runs; i++ {
				last = decodeOnce(t, v, name)
				held = append(held, last.held)
				copyT = append(copyT, last.copyT)
				decode = append(decode, last.decode)
			}
			rows = append(rows, row{name, stats(held), stats(copyT), stats(decode), cold, last.copied, last.calls, footprint(last.res), last.res.Layout})
		}
		delve := delveLoad(t, v.pid)
		for _, r := range rows {
			fmt.Printf("| %s | %s | %s | %s | %s | %s | %.1f / %.1f | %.1f MB | %d | %.1f MB | %.2f | %.0f ms | %.0f× |\n",
				v.bin.GoVersion, goTypes[r.name], r.layout, r.held, r.copyT, r.decode, ms(r.cold.held), ms(r.cold.decode),
				float64(r.copied)/1e6, r.calls, float64(r.foot)/1e6, float64(r.copied)/float64(r.foot),
				ms(delve[r.name]), float64(delve[r.name])/float64(r.held.med))
		}
	}
	fmt.Printf("\nmachine at the end: %s\n", machine())
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// footprint is the memory the map's own structures occupy: classic bucket
// array (with preallocated overflow buckets) and chained overflow buckets;
// Swiss groups, tables and directory. String contents are not counted.
func footprint(r *hmapdecode.Result) int64 {
	if c := r.Classic; c != nil {
		n := int64(1) << c.B
		pre := int64(0)
		if c.B >= 4 {
			pre = n / 16
		}
		return (n+pre+int64(r.Stats.Overflow))*int64(c.BucketSize) + 48
	}
	s := r.Swiss
	return int64(r.Stats.Groups)*int64(s.GroupSize) + int64(r.Stats.Tables)*32 + s.DirLen*8 + 48
}

// delveLoad attaches delve to pid, loads both package-level maps in full,
// and detaches; it returns the load time per map (attach excluded). The
// process is stopped from attach to detach.
func delveLoad(t testing.TB, pid int) map[string]time.Duration {
	grp, err := native.Attach(pid, nil, nil)
	if err != nil {
		t.Fatalf("delve attach: %v", err)
	}
	defer grp.Detach(false)
	tg := grp.Selected
	scope, err := proc.ThreadScope(tg, tg.CurrentThread())
	if err != nil {
		t.Fatalf("delve scope: %v", err)
	}
	cfg := proc.LoadConfig{MaxStringLen: 64, MaxArrayValues: entries + 1, MaxStructFields: -1, MaxVariableRecurse: 1}
	out := map[string]time.Duration{}
	for name, expr := range map[string]string{"ints": "main.Ints", "strs": "main.Strs"} {
		start := time.Now()
		v, err := scope.EvalExpression(expr, cfg)
		out[name] = time.Since(start)
		if err != nil {
			t.Fatalf("delve load %s: %v", expr, err)
		}
		if v.Unreadable != nil || len(v.Children) != 2*entries {
			t.Fatalf("delve load %s: unreadable %v, %d children", expr, v.Unreadable, len(v.Children))
		}
	}
	return out
}
