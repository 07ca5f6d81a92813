package symbolizer_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// builtVictims caches victim builds for this test binary.
var builtVictims sync.Map

func buildVictim(t testing.TB, toolchain string, stripped bool, more ...string) string {
	t.Helper()
	key := fmt.Sprintf("%s-%v%s", toolchain, stripped, strings.Join(more, ""))
	if p, ok := builtVictims.Load(key); ok {
		return p.(string)
	}
	dir, err := os.MkdirTemp("", "symbolizer-live-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "victim-"+key)
	var extra []string
	if stripped {
		extra = append(extra, "-ldflags=-s -w")
	}
	extra = append(extra, more...)
	testenv.BuildGo(t, "testdata/victim", toolchain, out, nil, extra...)
	builtVictims.Store(key, out)
	return out
}

// runningVictim is a started victim process, resumed and killed at cleanup.
type runningVictim struct {
	*testenv.Ready
	stderr *bytes.Buffer
}

func startVictim(t testing.TB, bin string, n int) *runningVictim {
	t.Helper()
	cmd := exec.Command(bin, strconv.Itoa(n))
	cmd.Env = append(os.Environ(), "GOTRACEBACK=system", "GOMAXPROCS=2")
	v := &runningVictim{stderr: &bytes.Buffer{}}
	cmd.Stderr = v.stderr
	v.Ready = testenv.StartReady(t, cmd)
	// main is returning from the write of "ready"; let it park in select{}.
	time.Sleep(100 * time.Millisecond)
	return v
}

// runtimeDump sends SIGQUIT and parses the runtime's own traceback.
func (v *runningVictim) runtimeDump(t testing.TB) map[int64]*rtGoroutine {
	t.Helper()
	if err := v.Cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Done:
	case <-time.After(60 * time.Second):
		t.Fatal("victim did not exit after SIGQUIT")
	}
	return parseRuntimeTraceback(v.stderr.String())
}

type rtFrame struct {
	fn   string
	file string
	line int
}

type rtGoroutine struct {
	id     int64
	state  string
	frames []rtFrame
}

var (
	rtHeader = regexp.MustCompile(`^goroutine (\d+)(?: gp=\S+ m=\S+(?: mp=\S+)?)? \[([^\]]*)\]:$`)
	rtFile   = regexp.MustCompile(`^\t(.*):(\d+)(?: \+0x[0-9a-f]+)?(?: fp=.*)?$`)
)

func parseRuntimeTraceback(s string) map[int64]*rtGoroutine {
	out := map[int64]*rtGoroutine{}
	var cur *rtGoroutine
	var fn string
	for _, line := range strings.Split(s, "\n") {
		if m := rtHeader.FindStringSubmatch(line); m != nil {
			id, _ := strconv.ParseInt(m[1], 10, 64)
			cur = &rtGoroutine{id: id, state: strings.Split(m[2], ", ")[0]}
			out[id] = cur
			continue
		}
		if cur == nil {
			continue
		}
		if line == "" {
			cur = nil
			continue
		}
		if m := rtFile.FindStringSubmatch(line); m != nil && fn != "" {
			ln, _ := strconv.Atoi(m[2])
			cur.frames = append(cur.frames, rtFrame{fn: fn, file: m[1], line: ln})
			fn = ""
			continue
		}
		if strings.HasPrefix(line, "created by ") {
			cur = nil
			continue
		}
		if i := strings.LastIndex(line, "("); i > 0 && !strings.HasPrefix(line, "\t") {
			fn = line[:i]
		}
	}
	return out
}

// target is an opened victim binary, inspected as the daemon does.
type target struct{ *probes.Binary }

func openTarget(t testing.TB, bin string) *target {
	t.Helper()
	b, err := probes.Inspect(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if b.Allgs == 0 {
		t.Fatalf("%s: runtime.allgs not found: %s", bin, b.AllgsErr)
	}
	return &target{b}
}

// LoadBias is where pid loaded a PIE binary minus its link address.
func (tg *target) LoadBias(pid int) (uint64, error) {
	if !tg.PIE {
		return 0, nil
	}
	return procmem.LoadBias(pid, tg.Entry)
}

func (tg *target) Capture(mem symbolizer.MemReader, regs map[int]symbolizer.Registers, opt symbolizer.CaptureOptions) (*symbolizer.Snapshot, error) {
	opt.Allgs = tg.Allgs
	return symbolizer.Capture(mem, tg.Table, tg.Layout, regs, opt)
}

func monotonicNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// dumpFrozen freezes pid, copies its goroutines (the held phase),
// captures them the old way too — reading the held process directly — and
// resumes it; then it analyses the copy and checks that it equals the
// direct capture: the same goroutines, states, wait reasons, PCs, stack
// errors and threads. It returns the goroutines from the copy and how
// long the process was held until the copy was done.
func dumpFrozen(t testing.TB, tg *target, pid int, usePtrace bool) ([]symbolizer.Goroutine, *symbolizer.Snapshot, time.Duration) {
	t.Helper()
	id, err := procmem.IdentityOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := procmem.Open(pid, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	direct, err := procmem.Open(pid, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	bias, err := tg.LoadBias(pid)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resume, err := procmem.Freeze(id, 2*time.Second)
	defer resume()
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(start)
	var regs map[int]symbolizer.Registers
	if usePtrace {
		full, err := threadregs.Ptrace(pid)
		if err != nil {
			t.Fatal(err)
		}
		regs = threadregs.ForUnwind(full)
		// Detaching must leave every thread in the group stop.
		if ok, err := procmem.AllStopped(pid); err != nil || !ok {
			t.Fatalf("after ptrace register read: all stopped = %v, %v", ok, err)
		}
	} else if regs, err = threadregs.FromProc(pid); err != nil {
		t.Fatal(err)
	}
	gotRegs := time.Since(start)
	opt := symbolizer.CaptureOptions{Allgs: tg.Allgs, LoadBias: bias, Nanotime: monotonicNow(), Deadline: time.Now().Add(2 * time.Second)}
	snap, err := symbolizer.CopyGoroutines(mem.Copy(), tg.Layout, regs, opt)
	if err != nil {
		t.Fatal(err)
	}
	copied := time.Since(start)
	want, err := tg.Capture(direct, regs, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := resume(); err != nil {
		t.Fatal(err)
	}
	cs := mem.Copy().Stats()
	t.Logf("all threads stopped after %v, registers after %v, copied after %v (copy %v: %d bytes, %d ranges, %d system calls)",
		stopped, gotRegs, copied, copied-gotRegs, cs.Bytes, cs.Ranges, cs.Calls)
	if !snap.Pending() {
		t.Fatal("a copied snapshot is not pending")
	}
	if err := snap.Analyse(mem.Copy().Image(), tg.Table); err != nil {
		t.Fatal(err)
	}
	sameSnapshot(t, snap, want)
	return snap.Symbolize(tg.Table), snap, copied
}

// sameSnapshot fails unless the snapshot analysed from the copy equals
// the one read from the held process.
func sameSnapshot(t testing.TB, got, want *symbolizer.Snapshot) {
	t.Helper()
	if len(got.Goroutines) != len(want.Goroutines) {
		t.Fatalf("copy: %d goroutines, held process: %d", len(got.Goroutines), len(want.Goroutines))
	}
	diffs := 0
	for i := range got.Goroutines {
		g, w := got.Goroutines[i], want.Goroutines[i]
		if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", w) {
			if diffs++; diffs <= 5 {
				t.Errorf("goroutine %d from the copy:\n%+v\nfrom the held process:\n%+v", w.ID, g, w)
			}
		}
	}
	if fmt.Sprintf("%+v %v %q", got.Threads, got.Truncated, got.Errors) != fmt.Sprintf("%+v %v %q", want.Threads, want.Truncated, want.Errors) {
		t.Errorf("threads/truncated/errors from the copy: %+v %v %q\nfrom the held process: %+v %v %q",
			got.Threads, got.Truncated, got.Errors, want.Threads, want.Truncated, want.Errors)
	}
	if diffs > 0 {
		t.Errorf("%d of %d goroutines differ", diffs, len(got.Goroutines))
	}
}

func TestGoroutinesMatchRuntime(t *testing.T) {
	testenv.RequirePrivileged(t)
	type tc struct {
		toolchain string
		stripped  bool
		n         int
	}
	var cases []tc
	for _, tcn := range testenv.Toolchains() {
		for _, s := range []bool{false, true} {
			// The whole matrix costs ~25 s on 2 cores, so it all runs by default.
			cases = append(cases, tc{tcn, s, 10}, tc{tcn, s, 1000}, tc{tcn, s, 10000})
		}
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/stripped=%v/n=%d", c.toolchain, c.stripped, c.n)
		t.Run(name, func(t *testing.T) {
			bin := buildVictim(t, c.toolchain, c.stripped)
			tg := openTarget(t, bin)
			v := startVictim(t, bin, c.n)
			ours, snap, frozen := dumpFrozen(t, tg, v.PID, c.n <= 10)
			t.Logf("%d goroutines, frozen %v, %d errors %q", len(ours), frozen, len(snap.Errors), first(snap.Errors, 3))
			theirs := v.runtimeDump(t)
			compareDumps(t, ours, theirs, c.n)
			checkText(t, ours)
		})
	}
}

// TestGoroutinesPIE runs the comparison on position-independent builds,
// which the kernel loads at a random base: every table lookup must subtract
// the load bias.
func TestGoroutinesPIE(t *testing.T) {
	testenv.RequirePrivileged(t)
	// A PIE build recompiles the standard library in PIE mode (~45 s on 2
	// cold cores per toolchain), so only the machine's own Go by default.
	toolchains := []string{"go1.26"}
	if os.Getenv("MAPSENTRY_SYMBOLIZER_FULL") == "1" {
		toolchains = testenv.Toolchains()
	}
	for _, tcn := range toolchains {
		t.Run(tcn, func(t *testing.T) {
			bin := buildVictim(t, tcn, true, "-buildmode=pie")
			tg := openTarget(t, bin)
			if !tg.PIE {
				t.Fatal("not PIE")
			}
			v := startVictim(t, bin, 100)
			bias, err := tg.LoadBias(v.PID)
			if err != nil || bias == 0 {
				t.Fatalf("load bias %#x, %v", bias, err)
			}
			ours, _, frozen := dumpFrozen(t, tg, v.PID, false)
			t.Logf("bias %#x, %d goroutines, frozen %v", bias, len(ours), frozen)
			compareDumps(t, ours, v.runtimeDump(t), 100)
		})
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func compareDumps(t *testing.T, ours []symbolizer.Goroutine, theirs map[int64]*rtGoroutine, n int) {
	t.Helper()
	byID := map[int64]*symbolizer.Goroutine{}
	for i := range ours {
		byID[ours[i].ID] = &ours[i]
	}
	if len(theirs) < n {
		t.Fatalf("runtime printed %d goroutines, victim has more than %d", len(theirs), n)
	}
	var missing, stateDiff, frameDiff int
	checkedFrames := 0
	for id, rt := range theirs {
		g, ok := byID[id]
		if !ok && id == 0 && rt.state == "idle" {
			continue // a g allocated after our dump, before the SIGQUIT dump
		}
		if !ok {
			missing++
			t.Errorf("goroutine %d [%s] missing from our dump", id, rt.state)
			continue
		}
		ourState := g.WaitReason
		if ourState == "" {
			ourState = g.Status
		}
		moving := func(s string) bool { return s == "running" || s == "runnable" }
		if ourState != rt.state && !(moving(ourState) && moving(rt.state)) {
			stateDiff++
			if stateDiff <= 5 {
				t.Errorf("goroutine %d: state %q, runtime %q", id, ourState, rt.state)
			}
			continue
		}
		if moving(rt.state) || rt.state == "syscall" && len(rt.frames) == 0 {
			continue
		}
		k := min(len(rt.frames), len(g.Frames), 4)
		if k == 0 {
			continue
		}
		for i := 0; i < k; i++ {
			o, r := g.Frames[i], rt.frames[i]
			if o.Function != r.fn || o.Line != r.line || o.File != r.file {
				frameDiff++
				if frameDiff <= 5 {
					t.Errorf("goroutine %d frame %d: %s %s:%d, runtime %s %s:%d", id, i, o.Function, o.File, o.Line, r.fn, r.file, r.line)
				}
				break
			}
		}
		checkedFrames++
	}
	// Running goroutines: the runtime cannot show their stacks, we unwind
	// them from their thread's registers. The victim's only running user
	// code is main.busy.
	running, unwound := 0, 0
	for _, g := range ours {
		if g.Status != "running" || g.Thread == 0 {
			continue
		}
		running++
		if g.StackError != "" {
			t.Logf("running goroutine %d on thread %d: %s", g.ID, g.Thread, g.StackError)
			continue
		}
		found := false
		for _, f := range g.Frames {
			found = found || f.Function == "main.busy"
		}
		if !found {
			t.Errorf("running goroutine %d: no main.busy frame in %+v", g.ID, g.Frames)
		}
		unwound++
	}
	t.Logf("%d running goroutines, %d unwound from thread registers", running, unwound)
	t.Logf("runtime printed %d goroutines; missing %d, state differences %d, frame differences %d, %d stacks compared",
		len(theirs), missing, stateDiff, frameDiff, checkedFrames)
	if checkedFrames < n/2 {
		t.Errorf("only %d stacks compared", checkedFrames)
	}
}

// checkText renders our dump in the runtime's traceback format and parses
// it back with the parser used for the runtime's own output: the same
// goroutines, states and frames must come out.
func checkText(t *testing.T, ours []symbolizer.Goroutine) {
	t.Helper()
	var b strings.Builder
	if err := symbolizer.WriteTraceback(&b, ours); err != nil {
		t.Fatal(err)
	}
	parsed := parseRuntimeTraceback(b.String())
	if len(parsed) != len(ours) {
		t.Fatalf("text has %d goroutines, dump %d", len(parsed), len(ours))
	}
	for _, g := range ours {
		p := parsed[g.ID]
		state := g.WaitReason
		if state == "" {
			state = g.Status
		}
		if p == nil || p.state != state || len(p.frames) != len(g.Frames) {
			t.Fatalf("goroutine %d does not round-trip through text: %+v", g.ID, p)
		}
	}
	groups := symbolizer.Summarize(ours)
	total := 0
	for _, gr := range groups {
		total += gr.Count
	}
	if total != len(ours) || len(groups) > len(ours) {
		t.Fatalf("summary: %d groups covering %d of %d goroutines", len(groups), total, len(ours))
	}
	if len(ours) > 1000 && len(groups) > 60 {
		t.Errorf("%d groups for %d goroutines in a handful of states", len(groups), len(ours))
	}
	var sb strings.Builder
	_ = symbolizer.WriteSummary(&sb, groups[:min(3, len(groups))])
	t.Logf("%d groups; largest:\n%s", len(groups), sb.String())
}
