package integration

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/client"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/report"
)

// copyVictim copies the partners victim for v into dir: a new inode, so
// the binary is this test's alone.
func copyVictim(t *testing.T, v variant, dir string) string {
	t.Helper()
	src, err := os.Open(shared.partnersVictim(t, v))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, v.name)
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// kernelLinks counts the kernel's BPF links to the programs ids with
// bpftool: a count independent of the daemon and of cilium/ebpf.
func kernelLinks(t *testing.T, ids []uint32) int {
	t.Helper()
	out, err := exec.Command(testenv.Tool(t, "bpftool"), "link", "show", "--json").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("bpftool link show: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("bpftool link show: %v", err)
	}
	var links []struct {
		ProgID uint32 `json:"prog_id"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("bpftool output: %v", err)
	}
	n := 0
	for _, l := range links {
		for _, id := range ids {
			if l.ProgID == id {
				n++
			}
		}
	}
	return n
}

// checkLinks waits until the daemon counts want map-op links, and checks
// that the kernel (cilium/ebpf link iteration in the daemon, and bpftool
// here) counts the same.
func (d *daemon) checkLinks(t *testing.T, what string, want func(int) bool) int {
	t.Helper()
	var st *client.MapOpsState
	waitFor(t, 20*time.Second, "map-op links "+what, func() bool {
		var err error
		st, err = d.c.MapOps(context.Background())
		return err == nil && want(st.Links) && st.KernelLinks == st.Links
	})
	if len(st.ProgramIDs) == 0 {
		t.Fatalf("%s: no map-op program ids: %+v", what, st)
	}
	if n := kernelLinks(t, st.ProgramIDs); n != st.Links {
		t.Fatalf("%s: daemon counts %d map-op links, bpftool %d", what, st.Links, n)
	}
	t.Logf("%s: %d map-op links (daemon, cilium/ebpf and bpftool agree)", what, st.Links)
	return st.Links
}

// TestMapOpLinksRemoved: disarm, process exit and daemon shutdown leave no
// map-op link in the kernel; a binary armed before it runs gets its probes
// when a process starts, and a PID arm covers that process only.
func TestMapOpLinksRemoved(t *testing.T) {
	startDaemonCheck(t)
	dir := t.TempDir()
	path := copyVictim(t, partnerBuilds[2], dir) // go1.26
	d := startDaemon(t, dir, "")
	ctx := context.Background()
	d.checkLinks(t, "at start", func(n int) bool { return n == 0 })

	v1 := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, v1.pid)
	st, err := d.c.Arm(ctx, client.ArmRequest{PID: v1.pid})
	if err != nil {
		t.Fatal(err)
	}
	if st.Links == 0 || len(st.Refused) > 0 {
		t.Fatalf("arm pid: %+v", st)
	}
	per := d.checkLinks(t, "pid armed", func(n int) bool { return n == st.Links })
	if _, err := d.c.Disarm(ctx, client.ArmRequest{PID: v1.pid}); err != nil {
		t.Fatal(err)
	}
	d.checkLinks(t, "pid disarmed", func(n int) bool { return n == 0 })

	// Binary-wide, then the process exits.
	if _, err := d.c.Arm(ctx, client.ArmRequest{Exe: path, For: "10m"}); err != nil {
		t.Fatal(err)
	}
	d.checkLinks(t, "exe armed", func(n int) bool { return n == per })
	v1.cmd.Process.Kill()
	v1.wait(t, 10*time.Second)
	d.checkLinks(t, "after process exit", func(n int) bool { return n == 0 })

	// The arm outlives the process: the next one is armed at discovery,
	// and its crash has flight-recorder partners.
	v2 := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, v2.pid)
	d.checkLinks(t, "new process of an armed exe", func(n int) bool { return n == per })
	v2.release()
	v2.wait(t, 90*time.Second)
	cr := d.crashOf(t, v2.pid)
	if !flightRecorded(cr) {
		t.Errorf("no flight-recorder partner: %+v (note %q)", cr.Partners, cr.PartnersNote)
	}
	d.checkLinks(t, "after the crash", func(n int) bool { return n == 0 })

	// Daemon shutdown with links held.
	v3 := startVictim(t, path, "writes", "wait")
	d.waitAttached(t, v3.pid)
	d.checkLinks(t, "before shutdown", func(n int) bool { return n == per })
	ms, err := d.c.MapOps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.stop()
	if n := kernelLinks(t, ms.ProgramIDs); n != 0 {
		t.Fatalf("%d map-op links of programs %v left after daemon shutdown", n, ms.ProgramIDs)
	}
}

// TestMapOpsOnCrash: in mode on-crash a binary's first map crash arms its
// later processes, whose crashes then name partners from the recorder.
func TestMapOpsOnCrash(t *testing.T) {
	startDaemonCheck(t)
	dir := t.TempDir()
	path := copyVictim(t, partnerBuilds[4], dir) // go1.27.3
	d := startDaemon(t, dir, "", "MAPSENTRY_MAPOPS_MODE=on-crash", "MAPSENTRY_MAPOPS_ON_CRASH_FOR=10m")
	v1 := startVictim(t, path, "rw", "wait")
	d.waitAttached(t, v1.pid)
	d.checkLinks(t, "before any crash", func(n int) bool { return n == 0 })
	v1.release()
	v1.wait(t, 90*time.Second)
	if cr := d.crashOf(t, v1.pid); flightRecorded(cr) {
		t.Errorf("flight-recorder partner before anything was armed: %+v", cr.Partners)
	}
	waitFor(t, 10*time.Second, "on-crash arm", func() bool {
		st, err := d.c.MapOps(context.Background())
		if err != nil {
			return false
		}
		for _, a := range st.Arms {
			if a.Path == path && a.Why == "on-crash" && time.Until(a.Until) > 9*time.Minute {
				return true
			}
		}
		return false
	})
	v2 := startVictim(t, path, "rw", "wait")
	d.waitAttached(t, v2.pid)
	d.checkLinks(t, "second process after a map crash", func(n int) bool { return n > 0 })
	v2.release()
	v2.wait(t, 90*time.Second)
	cr := d.crashOf(t, v2.pid)
	if !hasEvidence(cr, "main.writerA", report.EvidenceFlightRecorder) && !hasEvidence(cr, "main.writerA", report.EvidenceFatalSameMap) {
		t.Errorf("writer not named by the recorder: %+v (note %q)", cr.Partners, cr.PartnersNote)
	}
}

func flightRecorded(cr report.Crash) bool {
	for _, p := range cr.Partners {
		if p.Evidence == report.EvidenceFlightRecorder || (p.AgoNS != 0 && p.Evidence == report.EvidenceFatalSameMap) {
			return true
		}
	}
	return false
}
