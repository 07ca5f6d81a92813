package integration

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/internal/inspect"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// liveVariants are the crash victim's builds the live commands are checked
// on: every supported map implementation and pclntab generation, stripped
// and not. The victim fills its map with the keys 0..15 before printing.
var liveVariants = []variant{
	{"go119", "go1.19", false, "go1.19", "classic"},
	{"go119s", "go1.19", true, "go1.19", "classic"},
	{"go126", "go1.26", false, "go1.26", "swiss"},
	{"go126s", "go1.26", true, "go1.26", "swiss"},
	{"go127", "go1.27", false, "go1.27.3", "swiss"},
	{"go127s", "go1.27", true, "go1.27.3", "swiss"},
	{"go126pies", "go1.26", true, "go1.26", "swiss"}, // PIE: load bias
}

const victimMapLen = 16

var headerRE = regexp.MustCompile(`pid=(\d+) map=(0x[0-9a-f]+) go=(\S+)`)

// mapAddr is the map address the victim printed.
func (v *victim) mapAddr(t *testing.T) string {
	t.Helper()
	m := headerRE.FindStringSubmatch(v.header)
	if m == nil {
		t.Fatalf("victim header %q", v.header)
	}
	return m[2]
}

// cli runs the mapsentry CLI against d and returns its stdout.
func (d *daemon) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(shared.mapsentry, args...)
	cmd.Env = append(os.Environ(), d.env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), errors.New(strings.TrimSpace(stderr.String()) + ": " + err.Error())
	}
	return string(out), nil
}

// running fails the test if the victim is stopped (or gone).
func (v *victim) running(t *testing.T) {
	t.Helper()
	// A stop is visible at once; give a SIGCONT in flight a moment.
	for i := 0; i < 20; i++ {
		if s := v.state(); s == 'S' || s == 'R' {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("victim %d is in state %q after the live operation, want running or sleeping", v.pid, v.state())
}

func TestLiveDecode(t *testing.T) {
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "")
	for _, vr := range liveVariants {
		t.Run(vr.name, func(t *testing.T) {
			v := startVictim(t, shared.victim(t, vr), "sleep")
			addr := v.mapAddr(t)

			// Address only: the type is found among the binary's map types.
			out, err := d.cli(t, "decode", "--pid", strconv.Itoa(v.pid), "--addr", addr, "-o", "json")
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			var r hmapdecode.Result
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("decode output: %v\n%s", err, out)
			}
			if r.Count != victimMapLen || r.Stats.EntriesFound != victimMapLen || r.Layout != vr.layout {
				t.Fatalf("count %d, entries_found %d, layout %s; want %d, %d, %s (note: %s)",
					r.Count, r.Stats.EntriesFound, r.Layout, victimMapLen, victimMapLen, vr.layout, r.Note)
			}
			for _, a := range r.Anomalies {
				t.Errorf("anomaly %s: %s", a.Code, a.Detail)
			}
			v.running(t)
			t.Logf("address only: type_source=%s go_type=%q note=%q", r.TypeSource, r.GoType, r.Note)

			// The typed answer names the candidates when several fit; the
			// right one, given back, yields the victim's keys.
			a, _ := strconv.ParseUint(addr, 0, 64)
			res, err := d.c.Decode(context.Background(), inspect.DecodeRequest{PID: v.pid, Addr: a})
			if err != nil {
				t.Fatal(err)
			}
			// The text output asks for a summary: no per-table list,
			// the same counts.
			sum, err := d.c.Decode(context.Background(), inspect.DecodeRequest{PID: v.pid, Addr: a, Summary: true})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Map.Tables != nil || sum.Map.Count != res.Map.Count || sum.Map.Stats.EntriesFound != res.Map.Stats.EntriesFound {
				t.Errorf("summary: %d tables, count %d, found %d; want none, %d, %d (full answer: %d tables)",
					len(sum.Map.Tables), sum.Map.Count, sum.Map.Stats.EntriesFound, res.Map.Count, res.Map.Stats.EntriesFound, len(res.Map.Tables))
			}
			typ := res.Map.TypeAddr
			if res.Map.TypeSource != "descriptor" {
				i := slices.IndexFunc(res.TypeCandidates, func(c inspect.TypeCandidate) bool { return c.GoType == "map[int]int" })
				if i < 0 {
					t.Fatalf("map[int]int not among the type candidates %+v (note %q)", res.TypeCandidates, res.Map.Note)
				}
				typ = res.TypeCandidates[i].Addr
			}
			if !res.Freeze.Resumed || res.Freeze.ResumedBy != "done" || !res.Freeze.AllThreadsStopped {
				t.Errorf("freeze %+v", res.Freeze)
			}
			out, err = d.cli(t, "decode", "--pid", strconv.Itoa(v.pid), "--addr", addr,
				"--type-addr", "0x"+strconv.FormatUint(typ, 16), "--keys", "-o", "json")
			if err != nil {
				t.Fatalf("decode with type: %v", err)
			}
			r = hmapdecode.Result{}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatal(err)
			}
			if r.GoType != "map[int]int" || r.TypeSource != "descriptor" || len(r.Entries) != victimMapLen {
				t.Fatalf("with --type-addr: go_type %q, type_source %s, %d entries", r.GoType, r.TypeSource, len(r.Entries))
			}
			var keys []int
			for _, e := range r.Entries {
				b, _ := hex.DecodeString(string(mustJSONString(t, e.Key)))
				if len(b) != 8 {
					t.Fatalf("key %x: want 8 bytes", b)
				}
				keys = append(keys, int(binary.LittleEndian.Uint64(b)))
			}
			slices.Sort(keys)
			for i, k := range keys {
				if k != i {
					t.Fatalf("keys %v, want 0..%d", keys, victimMapLen-1)
				}
			}
			// Text: the heat map and the anomalies section.
			txt, err := d.cli(t, "decode", "--pid", strconv.Itoa(v.pid), "--addr", addr)
			if err != nil || !strings.Contains(txt, "heat map") || !strings.Contains(txt, "anomalies") {
				t.Fatalf("text decode (%v):\n%s", err, txt)
			}
			v.running(t)
		})
	}
}

// mustJSONString returns the JSON string h marshals to, unquoted.
func mustJSONString(t *testing.T, h hmapdecode.Hex) string {
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLiveDump(t *testing.T) {
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "")
	for _, vr := range []variant{liveVariants[0], liveVariants[3], liveVariants[5], liveVariants[6]} {
		t.Run(vr.name, func(t *testing.T) {
			v := startVictim(t, shared.victim(t, vr), "sleep")
			res, err := d.c.Dump(context.Background(), inspect.DumpRequest{PID: v.pid})
			if err != nil {
				t.Fatal(err)
			}
			v.running(t)
			ours := map[int64]bool{}
			mainSleeps := false
			for _, g := range res.Goroutines {
				ours[g.ID] = true
				if g.ID == 1 {
					mainSleeps = slices.ContainsFunc(g.Frames, func(f symbolizer.Frame) bool { return f.Function == "main.main" })
				}
			}
			if !mainSleeps {
				t.Fatalf("goroutine 1 missing or without main.main: %+v", res.Goroutines)
			}
			text, err := d.cli(t, "dump", "--pid", strconv.Itoa(v.pid))
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(text, "\ngoroutine ") + 1; n != len(res.Goroutines) || !strings.Contains(text, "main.main(") {
				t.Fatalf("text dump has %d goroutines, JSON %d:\n%s", n, len(res.Goroutines), text)
			}
			v.running(t)

			// The runtime's own all-goroutine traceback of the same process.
			syscall.Kill(v.pid, syscall.SIGQUIT)
			v.wait(t, 10*time.Second)
			var theirs []int64
			for _, line := range strings.Split(v.stderr.String(), "\n") {
				if rest, ok := strings.CutPrefix(line, "goroutine "); ok {
					if id, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64); err == nil && id != 0 {
						theirs = append(theirs, id)
					}
				}
			}
			if len(theirs) == 0 {
				t.Fatalf("no goroutines in the runtime's SIGQUIT dump:\n%s", v.stderr.String())
			}
			for _, id := range theirs {
				if !ours[id] {
					t.Errorf("goroutine %d in the runtime's dump, not in ours (%d goroutines)", id, len(ours))
				}
			}
			t.Logf("%d goroutines, runtime printed %d; frozen %s", len(ours), len(theirs), time.Duration(res.Freeze.FrozenNS))
		})
	}
}

// TestLiveResumedOnCancel holds the process after reading
// (capture.debug_hold) and checks that a canceled request resumes it at
// once. (freeze.max must exceed debug_hold, so the deadline path is
// covered by inspect's unit tests.)
func TestLiveResumedOnCancel(t *testing.T) {
	bin := shared.victim(t, liveVariants[3])
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "",
		"MAPSENTRY_CAPTURE_DEBUG_HOLD=30s", "MAPSENTRY_FREEZE_MAX=60s")
	v := startVictim(t, bin, "sleep")
	for _, op := range []string{"dump", "decode"} {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			var err error
			// The previous request may still be finishing (naming frames
			// after its resume): 409 until it has.
			for {
				if op == "dump" {
					_, err = d.c.Dump(ctx, inspect.DumpRequest{PID: v.pid})
				} else {
					a, _ := strconv.ParseUint(v.mapAddr(t), 0, 64)
					_, err = d.c.Decode(ctx, inspect.DecodeRequest{PID: v.pid, Addr: a})
				}
				if !errors.Is(err, client.ErrConflict) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			errc <- err
		}()
		waitFor(t, 10*time.Second, op+": victim stopped", func() bool { return v.state() == 'T' })
		time.Sleep(100 * time.Millisecond) // well inside the hold
		t0 := time.Now()
		cancel()
		if err := <-errc; err == nil {
			t.Fatalf("%s: canceled request succeeded", op)
		}
		waitFor(t, 2*time.Second, op+": victim resumed after cancel", func() bool { return v.state() != 'T' })
		t.Logf("%s: resumed %s after the cancel", op, time.Since(t0).Round(time.Millisecond))
		v.running(t)
	}
}

// TestLiveRefused: decode and dump are write routes, refused to a caller
// that may read; the daemon never inspects itself.
func TestLiveRefused(t *testing.T) {
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", "MAPSENTRY_API_GROUP=nogroup")
	v := startVictim(t, shared.victim(t, liveVariants[3]), "sleep")
	// nobody must reach the socket and the binary.
	for _, dir := range []string{filepath.Dir(d.socket), filepath.Dir(filepath.Dir(d.socket)), shared.dir} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	asNobody := func(args ...string) (string, error) {
		cmd := exec.Command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", shared.mapsentry}, args...)...)
		cmd.Env = append(os.Environ(), d.env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := asNobody("status"); err != nil {
		t.Fatalf("nobody (group nogroup = api.group) cannot read: %v\n%s", err, out)
	}
	pid := strconv.Itoa(v.pid)
	for _, args := range [][]string{
		{"decode", "--pid", pid, "--addr", v.mapAddr(t)},
		{"dump", "--pid", pid},
	} {
		out, err := asNobody(args...)
		if err == nil || !strings.Contains(out, "permission denied") || !strings.Contains(out, "write") {
			t.Errorf("%s as nobody: err %v, output %q; want a write-permission refusal", args[0], err, out)
		}
	}
	v.running(t)

	// The daemon's own process.
	st, err := d.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.c.Dump(context.Background(), inspect.DumpRequest{PID: st.PID})
	if err == nil || !strings.Contains(err.Error(), "daemon itself") {
		t.Errorf("dump of the daemon: %v", err)
	}
}

// TestShowIncludesDump: `mapsentry show ID` prints the map, the partners
// and every goroutine, the crashing goroutine first; -o json stays the
// full report.
func TestShowIncludesDump(t *testing.T) {
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "")
	v := startVictim(t, shared.victim(t, liveVariants[3]), "writes", "wait")
	d.waitAttached(t, v.pid)
	v.release()
	v.wait(t, 90*time.Second)
	cr := d.crashOf(t, v.pid)
	if len(cr.Goroutines) == 0 || len(cr.Fatal.Events) == 0 {
		t.Fatalf("report without goroutines or events: %+v", cr.Capture)
	}
	text, err := d.cli(t, "show", cr.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--- map ---", "heat map", "anomalies", "--- goroutines (", "main.writer("} {
		if !strings.Contains(text, want) {
			t.Errorf("show lacks %q:\n%s", want, text)
		}
	}
	if cr.Map != nil && cr.Map.Result != nil && !strings.Contains(text, " at 0x"+strconv.FormatUint(cr.Map.Addr, 16)) {
		t.Errorf("show does not name the map at %#x", cr.Map.Addr)
	}
	if len(cr.Partners) > 0 && !strings.Contains(text, "--- partners") {
		t.Errorf("show lacks the %d partners", len(cr.Partners))
	}
	_, dump, _ := strings.Cut(text, "--- goroutines (")
	_, dump, _ = strings.Cut(dump, "\n")
	if n := strings.Count("\n"+dump, "\ngoroutine "); n != len(cr.Goroutines) {
		t.Errorf("show prints %d goroutines, the report has %d", n, len(cr.Goroutines))
	}
	if goid := cr.Fatal.Events[0].Goid; goid > 0 && !strings.HasPrefix(dump, "goroutine "+strconv.FormatInt(goid, 10)+" [") {
		t.Errorf("first goroutine printed is not the crashing one (%d):\n%.300s", goid, dump)
	}
	js, err := d.cli(t, "show", cr.ID, "-o", "json")
	if err != nil || !strings.Contains(js, `"goroutines"`) || !strings.Contains(js, `"fatal"`) {
		t.Errorf("show -o json (%v): not the full report", err)
	}
}
