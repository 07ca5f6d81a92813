package hmapdecodebench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

// TestBenchDaemon is `mapsentry decode` of a live 1M-entry map as a user
// runs it, against a daemon of its own (own socket, state dir and scope):
// per toolchain and map, 5 decodes with the type given and 5 with only the
// address (the type is then looked up among the binary's map types). It
// reports what the result says the process was held (freeze.frozen_ns),
// the whole `mapsentry decode` command's wall time, and the daemon's peak
// RSS (VmHWM; one daemon per row) against the bytes copied.
func TestBenchDaemon(t *testing.T) {
	if os.Getenv("MAPSENTRY_BENCH") != "1" {
		t.Skip("set MAPSENTRY_BENCH=1 to run the live 1M-entry benchmark")
	}
	testenv.RequirePrivileged(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "mapsentry")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/mapsentry").CombinedOutput(); err != nil {
		t.Fatalf("build mapsentry: %v\n%s", err, out)
	}
	fmt.Printf("machine: %s\n\n", machine())
	fmt.Printf("| toolchain | map | request | held ms (frozen_ns) | `mapsentry decode` wall ms | in the daemon ms | copy ms | decode after resume ms | first (cold) held / wall ms | copied | daemon RSS before (anon) | peak RSS (anon) | peak/copied (anon/copied) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, tc := range toolchains() {
		vdir := filepath.Join(dir, tc)
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			t.Fatal(err)
		}
		v := startVictim(t, tc, vdir)
		for _, name := range []string{"ints", "strs"} {
			d := startDaemon(t, bin, vdir)
			d.waitWatched(t, v)
			// At rest, as a daemon on a host is long before anyone
			// decodes: start-up's memory given back (trimAfterStart).
			time.Sleep(time.Second)
			before, beforeAnon := d.rss("VmRSS"), d.rss("RssAnon")
			peakAnon := d.watchAnon()
			var copied int64
			for _, typed := range []bool{true, false} {
				var held, wall, daemonT, copyT, analyse []time.Duration
				// The daemon's first copy writes pages it never used
				// (docs/copy.md): one decode apart, not among the 5.
				cold, coldWall := d.decode(t, v, name, typed)
				for i := 0; i < runs; i++ {
					r, w := d.decode(t, v, name, typed)
					held = append(held, r.held)
					wall = append(wall, w)
					daemonT = append(daemonT, r.daemon)
					copyT = append(copyT, r.copyT)
					analyse = append(analyse, r.analyse)
					copied = r.copied
				}
				req := "--addr only"
				if typed {
					req = "--type-addr"
				}
				peak, anon := d.rss("VmHWM"), peakAnon()
				fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %.1f / %.1f | %.1f MB | %.0f MB (%.0f) | %.0f MB (%.0f) | %.2f (%.2f) |\n",
					v.bin.GoVersion, goTypes[name], req, stats(held), stats(wall), stats(daemonT), stats(copyT), stats(analyse),
					ms(cold.held), ms(coldWall),
					float64(copied)/1e6, float64(before)/1e6, float64(beforeAnon)/1e6, float64(peak)/1e6, float64(anon)/1e6,
					float64(peak)/float64(copied), float64(anon)/float64(copied))
			}
			d.stop()
		}
	}
	fmt.Printf("\nmachine at the end: %s\n", machine())
}

type daemon struct {
	cmd    *exec.Cmd
	bin    string
	env    []string
	c      *client.Client
	log    *bytes.Buffer
	done   chan struct{}
	socket string
}

// startDaemon starts `mapsentry daemon` scoped to dir with its own
// socket and state.
func startDaemon(t testing.TB, bin, dir string) *daemon {
	base := t.TempDir()
	d := &daemon{bin: bin, log: &bytes.Buffer{}, done: make(chan struct{}), socket: filepath.Join(base, "s.sock")}
	_ = os.WriteFile(filepath.Join(base, "none.yaml"), []byte("{}\n"), 0o644)
	d.env = []string{
		"MAPSENTRY_SOCKET=" + d.socket,
		"MAPSENTRY_STATE_DIR=" + filepath.Join(base, "state"),
		"MAPSENTRY_DISCOVERY_INCLUDE=" + dir + "/**",
		"MAPSENTRY_CONFIG=" + filepath.Join(base, "none.yaml"),
		"MAPSENTRY_EXPORT_ENABLED=false",
	}
	d.cmd = exec.Command(bin, "daemon")
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)
	d.c = client.New(d.socket)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-d.done:
			t.Fatalf("daemon exited:\n%s", d.log)
		default:
		}
		if _, err := d.c.Status(context.Background()); err == nil {
			return d
		}
	}
	t.Fatalf("daemon never answered:\n%s", d.log)
	return nil
}

func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// waitWatched waits until the daemon's discovery has probed v's binary
// and applied its DWARF, as it has for any program running on a host
// where the daemon runs: the first decode then borrows discovery's
// inspection of the binary.
func (d *daemon) waitWatched(t testing.TB, v *victim) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		bins, err := d.c.PS(context.Background())
		if err != nil {
			continue
		}
		for _, b := range bins {
			if slices.Contains(b.PIDs, v.pid) && len(b.Probes) > 0 && (!b.HasDWARF || b.LayoutSource == "dwarf") {
				return
			}
		}
	}
	t.Fatalf("pid %d never probed by the daemon:\n%s", v.pid, d.log)
}

// watchAnon samples the daemon's anonymous RSS every millisecond until
// the daemon ends; the returned function reports the largest seen so far
// (the kernel keeps a high-water mark of the total only, which counts the
// binary's own mapped pages, ~30 MB, too).
func (d *daemon) watchAnon() func() int64 {
	var mu sync.Mutex
	var peak int64
	go func() {
		for {
			select {
			case <-d.done:
				return
			case <-time.After(time.Millisecond):
			}
			a := d.rss("RssAnon")
			mu.Lock()
			peak = max(peak, a)
			mu.Unlock()
		}
	}()
	return func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// rss reads a /proc/PID/status memory line (VmRSS, VmHWM) in bytes.
func (d *daemon) rss(field string) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// decode runs `mapsentry decode` (text output, as a user reads it), times
// it, and reads from its output what it says: the freeze and the copy.
func (d *daemon) decode(t testing.TB, v *victim, name string, typed bool) (decoded, time.Duration) {
	args := []string{"decode", "--pid", strconv.Itoa(v.pid), "--addr", fmt.Sprintf("%#x", v.addrs[name][0])}
	if typed {
		args = append(args, "--type-addr", fmt.Sprintf("%#x", v.addrs[name][1]))
	}
	cmd := exec.Command(d.bin, args...)
	cmd.Env = append(os.Environ(), d.env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		t.Fatalf("mapsentry %s: %v\n%s\ndaemon log:\n%s", strings.Join(args, " "), err, out, d.log)
	}
	var r decoded
	text := string(out)
	m := freezeRE.FindStringSubmatch(text)
	c := copyRE.FindStringSubmatch(text)
	if m == nil || c == nil || !strings.Contains(text, "resumed=true by done") ||
		!strings.Contains(text, fmt.Sprintf("entries found=%d (header %d)", entries, entries)) {
		t.Fatalf("mapsentry decode printed:\n%s", out)
	}
	r.held, _ = time.ParseDuration(m[1])
	mb, _ := strconv.ParseFloat(c[1], 64)
	r.copied = int64(mb * 1e6)
	r.copyT, _ = time.ParseDuration(c[2])
	r.analyse, _ = time.ParseDuration(c[3])
	prepare, _ := time.ParseDuration(c[4])
	r.daemon = prepare + r.held + r.analyse
	return r, wall
}

// decoded is what `mapsentry decode` printed about the freeze and copy.
type decoded struct {
	held, copyT, analyse time.Duration
	daemon               time.Duration // prepare + held + analyse
	copied               int64
}

var (
	freezeRE = regexp.MustCompile(`freeze +(\S+) frozen`)
	copyRE   = regexp.MustCompile(`copy +([0-9.]+) MB in \d+ ranges, \d+ system calls, (\S+) of the freeze; analysed in (\S+) after the resume \(prepared in (\S+) before the stop\)`)
)
