package probes

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/testenv"
)

// perfOnly is a flight recorder on a kernel without uprobe_multi.
type perfOnly struct{ *bpf.MapOps }

func (perfOnly) MultiProgram() (*ebpf.Program, error) {
	return nil, errors.New("uprobe_multi refused (test)")
}

// Both ways of attaching the plan record the same writes: one uprobe_multi
// link for every probe (what Linux 6.6+ gets, with CAP_BPF and CAP_PERFMON
// alone), or one perf-event uprobe per probe (the fallback). Each is shown
// by the map writes of a real process landing in the writer ring of the
// map it printed.
func TestAttachMapOpsBothLinkKinds(t *testing.T) {
	testenv.RequirePrivileged(t)
	path := buildVictim(t, "go1.26", true)
	b, err := Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := b.PlanMapOps(f)
	f.Close()
	if err != nil || len(plan.Probes) == 0 {
		t.Fatalf("plan: %+v, %v", plan, err)
	}
	mo, err := bpf.LoadMapOps()
	if err != nil {
		t.Fatal(err)
	}
	defer mo.Close()
	if _, err := mo.MultiProgram(); err != nil {
		t.Fatalf("this kernel (6.6+) should load the uprobe_multi program: %v", err)
	}
	for _, tc := range []struct {
		name  string
		k     MapOpsKernel
		links int
	}{
		{"uprobe_multi", mo, 1},
		{"perf_event", perfOnly{mo}, len(plan.Probes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewManager(nil, Config{MapOps: tc.k}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			w := &watched{id: 7, bin: b}
			s := &mapOpState{plan: plan, pidLinks: map[int][]link.Link{}}
			ex, err := link.OpenExecutable(path)
			if err != nil {
				t.Fatal(err)
			}
			links := m.attachMapOps(w, s, ex, 0)
			defer m.closeLinks(w, &links, "test")
			if len(links) != tc.links || s.planErr != "" {
				t.Fatalf("%d links (want %d), error %q", len(links), tc.links, s.planErr)
			}
			if n, err := mo.KernelLinks(); err != nil || n != tc.links {
				t.Fatalf("kernel counts %d map-op links (%v), want %d", n, err, tc.links)
			}
			// The victim fills its map with 16 writes before printing it.
			out, err := exec.Command(path, "ok").Output()
			if err != nil {
				t.Fatalf("victim: %v", err)
			}
			var pid, addr uint64
			for _, f := range strings.Fields(string(out)) {
				if v, ok := strings.CutPrefix(f, "pid="); ok {
					pid, _ = strconv.ParseUint(v, 10, 32)
				}
				if v, ok := strings.CutPrefix(f, "map=0x"); ok {
					addr, _ = strconv.ParseUint(v, 16, 64)
				}
			}
			if pid == 0 || addr == 0 {
				t.Fatalf("victim output %q", out)
			}
			ws, err := mo.Writers(uint32(pid), addr)
			if err != nil || len(ws) == 0 {
				t.Fatalf("no writes recorded for map %#x of pid %d: %v", addr, pid, err)
			}
			if ws[0].Op != bpf.MapOpAssign || ws[0].Bin != 7 || ws[0].Caller == 0 {
				t.Errorf("newest write: %+v", ws[0])
			}
			m.closeLinks(w, &links, "test")
			if n, err := mo.KernelLinks(); err != nil || n != 0 {
				t.Fatalf("%d map-op links left after close (%v)", n, err)
			}
			t.Logf("%s: %d links for %d probes; %d writes recorded for map %#x", tc.name, tc.links, len(plan.Probes), len(ws), addr)
		})
	}
}
