// Package hmapdecodebench measures hmapdecode on live 1M-entry maps and
// compares it with loading the same map through delve (v1.27.2, pkg/proc
// native attach). Run by hand (root, ~2 minutes):
//
//	MAPSENTRY_BENCH=1 go test -run TestBenchReport -v ./bench/hmapdecode/
//	make bench   # runs BenchmarkLiveDecode once
//
// It prints the table recorded in docs/hmapdecode.md. It is not part of
// the default test run: building 1M-entry victims and loading them with
// delve takes minutes on a 2-vCPU machine.
package hmapdecodebench

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-delve/delve/pkg/proc"
	"github.com/go-delve/delve/pkg/proc/native"

	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/procmem"
	"github.com/mapsentry/mapsentry/symbolizer"
)

const entries = 1_000_000

func TestBenchReport(t *testing.T) {
	if os.Getenv("MAPSENTRY_BENCH") != "1" {
		t.Skip("set MAPSENTRY_BENCH=1 to run the live 1M-entry benchmark")
	}
	report(t)
}

// BenchmarkLiveDecode is the same report for `make bench` (-benchtime 1x):
// one full run prints the table; b.N is not used.
func BenchmarkLiveDecode(b *testing.B) { report(b) }

func report(t testing.TB) {
	testenv.RequirePrivileged(t)
	fmt.Printf("| toolchain | map | layout | decode wall (median of 5) | bytes read | read calls | map footprint | read/footprint | delve load | delve/ours |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, tc := range []string{"go1.19", "go1.26", "go1.27"} {
		bin := filepath.Join(t.TempDir(), "victim-"+tc)
		dir, _ := filepath.Abs("victim")
		testenv.BuildGo(t, dir, tc, bin, nil)
		b, err := probes.Inspect(bin)
		if err != nil {
			t.Fatal(err)
		}
		ef, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		md, err := symbolizer.FindModuledata(ef, b.Layout.Version.Minor)
		ef.Close()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, strconv.Itoa(entries))
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
		addrs := map[string][2]uint64{}
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != "READY" {
			f := strings.Fields(sc.Text())
			a, _ := strconv.ParseUint(f[1][2:], 16, 64)
			ty, _ := strconv.ParseUint(f[2][2:], 16, 64)
			addrs[f[0]] = [2]uint64{a, ty}
		}
		ours := map[string]time.Duration{}
		id, _ := procmem.IdentityOf(cmd.Process.Pid)
		resume, err := procmem.Freeze(id, 5*time.Second)
		if err != nil {
			_ = resume()
			t.Fatal(err)
		}
		type row struct {
			name, layout            string
			wall                    time.Duration
			bytes, calls, footprint int64
		}
		var rows []row
		for _, name := range []string{"ints", "strs"} {
			var walls []time.Duration
			var last *hmapdecode.Result
			var rb, rc int64
			for i := 0; i < 5; i++ {
				mem, err := procmem.Open(cmd.Process.Pid, 0)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				r, err := hmapdecode.Decode(context.Background(), mem, hmapdecode.Request{
					Addr: addrs[name][0], Layout: b.Layout, TypeAddr: addrs[name][1], TypesBase: md.Types,
					Limits: hmapdecode.Limits{Budget: time.Minute}})
				walls = append(walls, time.Since(start))
				rb, rc = mem.Stats()
				mem.Close()
				if err != nil {
					t.Fatal(err)
				}
				if r.Stats.EntriesFound != entries || len(r.Anomalies) != 0 {
					t.Fatalf("%s %s: found %d anomalies %+v", tc, name, r.Stats.EntriesFound, r.Anomalies)
				}
				last = r
			}
			sortDur(walls)
			ours[name] = walls[2]
			rows = append(rows, row{name, last.Layout, walls[2], rb, rc, footprint(last)})
		}
		_ = resume()
		delve := map[string]time.Duration{}
		for name, d := range delveLoad(t, cmd.Process.Pid) {
			delve[name] = d
		}
		for _, r := range rows {
			goType := map[string]string{"ints": "map[int64]int64", "strs": "map[string]string"}[r.name]
			fmt.Printf("| %s | %s | %s | %.1f ms | %.1f MB | %d | %.1f MB | %.2f | %.0f ms | %.0f× |\n",
				b.GoVersion, goType, r.layout, ms(r.wall), float64(r.bytes)/1e6, r.calls, float64(r.footprint)/1e6,
				float64(r.bytes)/float64(r.footprint), ms(delve[r.name]), float64(delve[r.name])/float64(r.wall))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func sortDur(d []time.Duration) {
	for i := range d {
		for j := i + 1; j < len(d); j++ {
			if d[j] < d[i] {
				d[i], d[j] = d[j], d[i]
			}
		}
	}
}

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
// and detaches; it returns the load time per map (attach excluded).
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
