package corefile_test

import (
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-delve/delve/pkg/proc"
	"github.com/go-delve/delve/pkg/proc/core"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/internal/corefile"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// TestDelveOpensCore freezes a victim, writes our compact core and our
// goroutine dump in the same freeze, and checks that delve's pkg/proc/core
// opens the core and lists the same goroutines at the same places.
func TestDelveOpensCore(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []string{"go1.26", "go1.27"} {
		t.Run(tc, func(t *testing.T) { delveCompare(t, tc) })
	}
}

func delveCompare(t *testing.T, toolchain string) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "victim")
	testenv.BuildGo(t, "../../symbolizer/testdata/victim", toolchain, bin, nil)

	cmd := exec.Command(bin, "100")
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	pid := testenv.StartReady(t, cmd).PID
	time.Sleep(100 * time.Millisecond)

	tab, err := symbolizer.OpenFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	allgs, err := symbolizer.FindAllgs(ef, tab)
	if err != nil {
		t.Fatal(err)
	}
	bi, _ := buildinfo.ReadFile(bin)
	ver, _ := goruntime.ParseVersion(bi.GoVersion, "")
	lay, err := goruntime.ForVersion(ver, "amd64")
	if err != nil {
		t.Fatal(err)
	}

	id, _ := procmem.IdentityOf(pid)
	mem, err := procmem.Open(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	start := time.Now()
	resume, err := procmem.Freeze(id, 2*time.Second)
	defer resume()
	if err != nil {
		t.Fatal(err)
	}
	full, err := threadregs.Ptrace(pid)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := symbolizer.Capture(mem, tab, lay, threadregs.ForUnwind(full), symbolizer.CaptureOptions{Allgs: allgs})
	if err != nil {
		t.Fatal(err)
	}
	var threads []corefile.Thread
	for tid, r := range full {
		threads = append(threads, corefile.Thread{TID: tid, Regs: r})
	}
	corePath := filepath.Join(dir, "core")
	res, err := corefile.Write(corePath, pid, mem, threads, corefile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	resume()
	t.Logf("frozen %v; core: %+v", time.Since(start), res)
	ours := snap.Symbolize(tab)
	if keep := os.Getenv("MAPSENTRY_KEEP_CORE"); keep != "" {
		_ = os.Link(corePath, keep+".core")
		_ = os.Link(bin, keep+".exe")
	}

	grp, err := core.OpenCore(corePath, bin, nil)
	if err != nil {
		t.Fatalf("delve cannot open our core: %v", err)
	}
	defer grp.Detach(false)
	gs, _, err := proc.GoroutinesInfo(grp.Selected, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[int64]*symbolizer.Goroutine{}
	for i := range ours {
		byID[ours[i].ID] = &ours[i]
	}
	if len(gs) != len(ours) {
		t.Errorf("delve lists %d goroutines, we list %d", len(gs), len(ours))
	}
	compared := 0
	for _, g := range gs {
		o, ok := byID[g.ID]
		if !ok {
			t.Errorf("delve goroutine %d not in our dump", g.ID)
			continue
		}
		if len(o.Frames) == 0 {
			continue
		}
		frames, err := proc.GoroutineStacktrace(grp.Selected, g, 8, 0)
		if err != nil || len(frames) == 0 {
			continue
		}
		// A goroutine in a system call: delve starts from its thread's
		// registers (inside the raw syscall), we start where the runtime's
		// traceback does, at g.syscallpc. Align on our first frame.
		skip := 0
		if strings.Contains(o.StackError, "signal handler") {
			// Its thread was in a signal handler: delve starts in the
			// handler (runtime.sigtramp), we at the interrupted context
			// the kernel saved. Compare from where delve reaches it.
			for skip < len(frames) && (frames[skip].Call.Fn == nil || frames[skip].Call.Fn.Name != o.Frames[0].Function) {
				skip++
			}
			if skip == len(frames) {
				t.Logf("goroutine %d: in a signal handler; delve's stack does not reach %s", g.ID, o.Frames[0].Function)
				continue
			}
			frames = frames[skip:]
		} else if o.Status == "syscall" {
			for skip < len(frames)-1 && (frames[skip].Call.Fn == nil || frames[skip].Call.Fn.Name != o.Frames[0].Function) {
				skip++
			}
			frames = frames[skip:]
		}
		// Delve lists inlined calls as frames too, as we do.
		n := min(len(frames), len(o.Frames), 4)
		for i := 0; i < n; i++ {
			df := frames[i].Call
			name := ""
			if df.Fn != nil {
				name = df.Fn.Name
			}
			wantLine := o.Frames[i].Line
			if i == 0 && skip == 0 {
				// For a parked goroutine delve symbolizes g.sched.pc itself;
				// we (like the runtime's traceback) use pc-1, inside the
				// call. Check delve against our table at the exact PC.
				_, wantLine, _ = tab.PCLine(o.Frames[0].PC)
			}
			if i == 0 && o.Status == "syscall" {
				wantLine = df.Line // the thread moved on from g.syscallpc inside the same function
			}
			if name != o.Frames[i].Function || df.Line != wantLine {
				t.Errorf("goroutine %d frame %d: delve %s:%d, ours %s:%d", g.ID, i, name, df.Line, o.Frames[i].Function, wantLine)
				break
			}
		}
		compared++
	}
	t.Logf("delve: %d goroutines, %d stacks compared", len(gs), compared)
	if compared < 100 {
		t.Errorf("only %d stacks compared", compared)
	}
}
