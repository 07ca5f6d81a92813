package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/exporter"
	"github.com/mapsentry/mapsentry/internal/jaegertest"
	"github.com/mapsentry/mapsentry/report"
)

// crashesGroup runs `mapsentry crashes --group -o json` against d.
func (d *daemon) crashesGroup(t *testing.T) []report.Group {
	t.Helper()
	cmd := exec.Command(shared.mapsentry, "crashes", "--group", "-o", "json")
	cmd.Env = append(cmd.Environ(), d.env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mapsentry crashes --group: %v\n%s", err, out)
	}
	var gs []report.Group
	if err := json.Unmarshal(out, &gs); err != nil {
		t.Fatalf("crashes --group -o json: %v\n%s", err, out)
	}
	return gs
}

// TestCrashGroups: the same race run 20 times, and once more from a
// rebuilt copy of the binary, is one group of 21 in `crashes --group`; a
// different race in the same binary is a second group; Jaeger's search by
// mapsentry.crash.signature finds every one of them.
func TestCrashGroups(t *testing.T) {
	v := variant{"go126", "go1.26", false, "go1.26", "swiss"}
	path := shared.diagnoseVictim(t, v)
	rebuilt := shared.diagnoseVictim(t, v, "-ldflags=-X main.build=2")
	j := jaegertest.Start(t)
	d := startDaemon(t, filepath.Join(shared.dir, "diagnose"), "",
		exportEnv(j)...)
	var ids []string
	sigs := map[string]int{}
	for i := 0; i < 21; i++ {
		p := path
		if i == 20 {
			p = rebuilt
		}
		cr, _, ok := d.diagnoseCrash(t, p, "global")
		if !ok {
			i-- // the race livelocked the victim: run it again
			continue
		}
		ids = append(ids, cr.ID)
		sigs[report.SignatureOf(&cr)]++
		if cr.Diagnosis == nil || len(cr.Diagnosis.Paths) != 2 {
			t.Logf("run %d: diagnosis %+v, partners %+v", i, cr.Diagnosis, cr.Partners)
		}
	}
	other, _, ok := d.diagnoseCrash(t, path, "global2")
	if !ok {
		t.Fatal("the second race livelocked")
	}
	if len(sigs) != 1 {
		t.Fatalf("21 runs of one race gave %d signatures: %v", len(sigs), sigs)
	}
	var sig string
	for s := range sigs {
		sig = s
	}
	otherSig := report.SignatureOf(&other)
	if otherSig == sig {
		t.Fatalf("a different race has the same signature %s", sig)
	}
	gs := d.crashesGroup(t)
	byID := map[string]report.Group{}
	for _, g := range gs {
		byID[g.Signature] = g
	}
	g := byID[sig]
	if len(gs) != 2 || g.Count != 21 || g.Captured != 21 || byID[otherSig].Count != 1 {
		t.Fatalf("groups %+v: want %s with 21 and %s with 1", gs, sig, otherSig)
	}
	if len(g.Binaries) != 2 || g.FirstSeen.After(g.LastSeen) || g.ExampleID == "" {
		t.Errorf("group %+v: want 2 binaries, first <= last seen, an example", g)
	}
	if !strings.Contains(g.Title, "main.ledger") {
		t.Errorf("group title %q does not name main.ledger", g.Title)
	}
	// Jaeger: every crash of the group, from both binaries (two services),
	// by the signature alone.
	want := map[string]bool{}
	for _, id := range ids {
		want[exporter.TraceID(id).String()] = true
	}
	waitFor(t, 60*time.Second, "21 traces with the signature in Jaeger", func() bool {
		got := map[string]bool{}
		for _, svc := range []string{filepath.Base(path), filepath.Base(rebuilt)} {
			for _, tr := range j.FindTracesByTag(t, svc, "mapsentry.crash.signature", sig) {
				got[tr.TraceID] = true
			}
		}
		for id := range want {
			if !got[id] {
				return false
			}
		}
		return len(got) == len(want)
	})
	waitFor(t, 60*time.Second, "the other race's trace by its signature", func() bool {
		trs := j.FindTracesByTag(t, filepath.Base(path), "mapsentry.crash.signature", otherSig)
		return len(trs) == 1 && trs[0].TraceID == exporter.TraceID(other.ID).String()
	})
	// The trace says the diagnosis: the root span's name and attribute.
	last, err := d.c.Crash(t.Context(), ids[len(ids)-1])
	if err != nil || last.Diagnosis == nil {
		t.Fatalf("crash %s: %v", ids[len(ids)-1], err)
	}
	tr, ok := j.Trace(t, exporter.TraceID(last.ID).String())
	if !ok {
		t.Fatal("trace of the last crash not found")
	}
	for _, sp := range tr.Spans {
		if len(sp.References) > 0 {
			continue
		}
		tags := jaegertest.Map(sp.Tags)
		if !strings.Contains(sp.OperationName, "main.ledger") || !strings.Contains(sp.OperationName, "main.deposit") ||
			tags["mapsentry.diagnosis"] != last.Diagnosis.Sentence || tags["mapsentry.crash.signature"] != sig {
			t.Errorf("root span %q, diagnosis %v, signature %v; want the diagnosis %q and %s", sp.OperationName,
				tags["mapsentry.diagnosis"], tags["mapsentry.crash.signature"], last.Diagnosis.Sentence, sig)
		}
	}
}

// crashLoopResult is what TestCrashLoop measured (bench/crashloop).
type crashLoopResult struct {
	Seconds       float64 `json:"seconds"`
	Runs          int     `json:"runs"`
	Full          int     `json:"full_captures"`
	Suppressed    int     `json:"suppressed"`
	MaxFull       int     `json:"max_full"`
	DaemonCPUSecs float64 `json:"daemon_cpu_seconds"`
	StoreBytes    int64   `json:"store_growth_bytes"`
	StoreBefore   int64   `json:"store_bytes_before"`
	Loadavg       string  `json:"loadavg"`
}

// TestCrashLoop: a victim restarted every 100 ms for a while (10 s in the
// suite, 60 s in bench/crashloop): at most capture.loop.max_full full
// captures, every other crash counted; the daemon's CPU time and the
// store's growth are measured.
func TestCrashLoop(t *testing.T) {
	secs := envInt(t, "MAPSENTRY_CRASHLOOP_SECONDS", 10)
	const maxFull = 5
	v := variant{"go126", "go1.26", false, "go1.26", "swiss"}
	path := shared.diagnoseVictim(t, v)
	d := startDaemon(t, filepath.Join(shared.dir, "diagnose"), "",
		"MAPSENTRY_CAPTURE_LOOP_MAX_FULL="+strconv.Itoa(maxFull), "MAPSENTRY_CAPTURE_LOOP_INTERVAL=1h",
		"MAPSENTRY_LOG_LEVEL=info")
	// The first run waits until the binary is probed.
	first := startVictim(t, path, "global-late", "wait")
	d.waitAttached(t, first.pid)
	cpu0, db0 := procCPU(t, d.cmd.Process.Pid), fileSize(filepath.Join(d.state, "mapsentry.db"))
	first.release()
	runs := 0
	if code := first.wait(t, 60*time.Second); code != 2 {
		t.Fatalf("victim exit %d, want 2", code)
	}
	runs++
	start := time.Now()
	for time.Since(start) < time.Duration(secs)*time.Second {
		time.Sleep(100 * time.Millisecond)
		vic := startVictim(t, path, "global-late")
		code, livelock := vic.waitRace(t, 60*time.Second)
		if livelock != "" {
			t.Logf("victim livelocked, not counted: %s", livelock)
			continue
		}
		if code != 2 {
			t.Fatalf("run %d: victim exit %d, want 2 (stderr %q)", runs, code, firstLine(vic.stderr.String()))
		}
		runs++
	}
	elapsed := time.Since(start)
	// Every crash is captured or counted: wait for the last sessions
	// (bounded), then measure.
	count := func() (full, suppressed int) {
		cs, err := d.c.Crashes(t.Context(), 100000)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if strings.HasSuffix(c.Process.Exe, filepath.Base(path)) {
				full++
			}
		}
		for _, g := range d.crashesGroup(t) {
			suppressed += g.Suppressed
		}
		return full, suppressed
	}
	full, suppressed := count()
	for wait := time.Now(); full+suppressed < runs && time.Since(wait) < 15*time.Second; full, suppressed = count() {
		time.Sleep(200 * time.Millisecond)
	}
	cpu1, db1 := procCPU(t, d.cmd.Process.Pid), fileSize(filepath.Join(d.state, "mapsentry.db"))
	load, _ := os.ReadFile("/proc/loadavg")
	res := crashLoopResult{Seconds: elapsed.Seconds(), Runs: runs, Full: full, Suppressed: suppressed, MaxFull: maxFull,
		DaemonCPUSecs: cpu1 - cpu0, StoreBytes: db1 - db0, StoreBefore: db0, Loadavg: strings.TrimSpace(string(load))}
	t.Logf("crash loop: %+v", res)
	if out := os.Getenv("MAPSENTRY_CRASHLOOP_OUT"); out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		os.WriteFile(out, b, 0o644)
	}
	// Both sides of the race (deposit or withdraw reaches fatal) are one
	// loop once a capture has shown its signature.
	if full > maxFull {
		t.Errorf("%d full captures of a crash loop, want at most %d", full, maxFull)
	}
	if suppressed == 0 || full+suppressed != runs {
		t.Errorf("%d runs: %d captured, %d counted: want every crash either captured or counted", runs, full, suppressed)
	}
}

// procCPU is a process's user+system CPU time in seconds.
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func fileSize(path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Blocks * 512 // allocated: bbolt files are sparse
}
