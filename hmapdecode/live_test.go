package hmapdecode

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// victimBuild is one way of building testdata/victim.
type victimBuild struct {
	name      string
	toolchain string
	env       []string
	stripped  bool
}

var victimBuilds = []victimBuild{
	{"go1.19", "go1.19", nil, false},
	{"go1.19-stripped", "go1.19", nil, true},
	{"go1.26", "go1.26", nil, false},
	{"go1.26-stripped", "go1.26", nil, true},
	{"go1.27", "go1.27", nil, false},
	{"go1.27-stripped", "go1.27", nil, true},
	{"go1.27-split", "go1.27", []string{"GOEXPERIMENT=mapsplitgroup"}, false},
	{"go1.27-split-stripped", "go1.27", []string{"GOEXPERIMENT=mapsplitgroup"}, true},
}

// builtVictims caches binaries across the tests of one run.
var builtVictims sync.Map // name -> path

func buildVictim(t testing.TB, b victimBuild) string {
	t.Helper()
	if p, ok := builtVictims.Load(b.name); ok {
		return p.(string)
	}
	dir, err := filepath.Abs("testdata/victim")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(os.TempDir(), fmt.Sprintf("hmapdecode-victim-%d-%s", os.Getpid(), b.name))
	var extra []string
	if b.stripped {
		extra = append(extra, "-ldflags=-s -w")
	}
	testenv.BuildGo(t, dir, b.toolchain, out, b.env, extra...)
	builtVictims.Store(b.name, out)
	return out
}

// victimMap is one line of the victim's ground truth.
type victimMap struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Type    string `json:"type"`
	Len     int    `json:"len"`
	Digest  string `json:"digest"`
	KeyKind string `json:"key_kind"`
}

func (m victimMap) addr(t testing.TB) (uint64, uint64) {
	a, err1 := strconv.ParseUint(strings.TrimPrefix(m.Addr, "0x"), 16, 64)
	ty, err2 := strconv.ParseUint(strings.TrimPrefix(m.Type, "0x"), 16, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("victim line %+v", m)
	}
	return a, ty
}

// victim is a running victim process.
type victim struct {
	pid   int
	stdin io.WriteCloser
	out   *bufio.Scanner
	maps  map[string]victimMap
	bin   string
}

// startVictim runs bin, reads its ground truth, and registers cleanup that
// always resumes and kills it: a stopped victim must never outlive a test.
func startVictim(t testing.TB, bin string, large int) *victim {
	t.Helper()
	cmd := exec.Command(bin, strconv.Itoa(large))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	v := &victim{pid: cmd.Process.Pid, stdin: stdin, out: bufio.NewScanner(stdout), maps: map[string]victimMap{}, bin: bin}
	v.out.Buffer(make([]byte, 1<<16), 1<<20)
	deadline := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	defer deadline.Stop()
	for v.out.Scan() {
		line := v.out.Text()
		if line == "READY" {
			return v
		}
		var m victimMap
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("victim line %q: %v", line, err)
		}
		v.maps[m.Name] = m
	}
	t.Fatalf("victim exited before READY: %v", v.out.Err())
	return nil
}

// target is what a decode of a victim needs from its binary.
type target struct {
	layout    *goruntime.Layout
	typesBase uint64
}

func inspect(t testing.TB, bin string, stripped bool) target {
	t.Helper()
	b, err := probes.Inspect(bin)
	if err != nil {
		t.Fatalf("inspect %s: %v", bin, err)
	}
	if b.Stripped != stripped {
		t.Fatalf("stripped = %v, want %v", b.Stripped, stripped)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	if !stripped {
		// The built-in tables must agree with the binary's own DWARF.
		d, err := ef.DWARF()
		if err != nil {
			t.Fatal(err)
		}
		changed, err := b.Layout.ApplyMapsDWARF(d)
		if err != nil {
			t.Fatalf("map offsets from DWARF: %v", err)
		}
		if len(changed) > 0 {
			t.Errorf("goruntime map table contradicted by DWARF: %v", changed)
		}
	}
	md, err := symbolizer.FindModuledata(ef, b.Layout.Version.Minor)
	if err != nil {
		t.Fatalf("moduledata: %v", err)
	}
	return target{layout: b.Layout, typesBase: md.Types}
}

// freeze stops the victim; resume runs in cleanup and may also be called
// early.
func freeze(t testing.TB, pid int) func() {
	t.Helper()
	id, err := procmem.IdentityOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	resume, err := procmem.Freeze(id, 5*time.Second)
	t.Cleanup(func() { _ = resume() })
	if err != nil {
		t.Fatalf("freeze %d: %v", pid, err)
	}
	return func() { _ = resume() }
}

// keyDigest recomputes the victim's digest from decoded entries.
func keyDigest(t testing.TB, r *Result, kind string) string {
	var sum uint64
	for _, e := range r.Entries {
		var k []byte
		switch kind {
		case "string":
			if e.KeyString == nil {
				t.Errorf("entry %s: no key text", e.Where)
				continue
			}
			k = []byte(*e.KeyString)
		default:
			k = e.Key
		}
		h := fnv.New64a()
		h.Write(k)
		sum += h.Sum64()
	}
	return strconv.FormatUint(sum, 16)
}

func TestLiveVictims(t *testing.T) {
	if testing.Short() {
		t.Skip("live victims: not in -short")
	}
	testenv.RequirePrivileged(t)
	for _, b := range victimBuilds {
		t.Run(b.name, func(t *testing.T) {
			bin := buildVictim(t, b)
			tgt := inspect(t, bin, b.stripped)
			v := startVictim(t, bin, 100_000)
			freeze(t, v.pid)
			mem, err := procmem.Open(v.pid, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			for _, name := range []string{"empty", "small", "midgrow", "large", "strings", "structs", "pointers", "deleted", "indirect", "write8"} {
				m, ok := v.maps[name]
				if !ok {
					t.Fatalf("victim did not report %s", name)
				}
				addr, typ := m.addr(t)
				req := Request{Addr: addr, Layout: tgt.layout, TypeAddr: typ, TypesBase: tgt.typesBase, Keys: true,
					Limits: Limits{Budget: 20 * time.Second}}
				r, err := Decode(context.Background(), mem, req)
				if err != nil {
					t.Fatalf("%s: decode: %v", name, err)
				}
				sameFromCopy(t, name, v.pid, req, r)
				if r.Count != int64(m.Len) || r.Stats.EntriesFound != int64(m.Len) || len(r.Entries) != m.Len {
					t.Errorf("%s: count %d found %d entries %d, victim len %d", name, r.Count, r.Stats.EntriesFound, len(r.Entries), m.Len)
				}
				if got := keyDigest(t, r, m.KeyKind); got != m.Digest {
					t.Errorf("%s: key digest %s, victim %s", name, got, m.Digest)
				}
				if len(r.Anomalies) != 0 || r.Truncated {
					t.Errorf("%s: anomalies %+v truncated %v", name, r.Anomalies, r.Truncated)
				}
				if r.TypeSource != "descriptor" {
					t.Errorf("%s: type source %s", name, r.TypeSource)
				}
				t.Logf("%s: %s layout=%s count=%d read %d B in %d calls, %.2f ms", name, r.GoType, r.Layout, r.Count, r.Read.Bytes, r.Read.Calls, float64(r.Read.DurationNS)/1e6)
				switch name {
				case "pointers":
					if r.GoType != "map[string]*main.Session" {
						t.Errorf("pointers: go_type %q", r.GoType)
					}
				case "midgrow":
					if tgt.layout.Maps == goruntime.MapClassic && (r.Growth == nil || !r.Growth.Growing || r.Growth.EntriesInOld == 0) {
						t.Errorf("midgrow: growth %+v, want growing with entries in old buckets", r.Growth)
					}
				case "deleted":
					if r.Stats.Tombstones == 0 {
						t.Errorf("deleted: no tombstones")
					}
				}
				// Without the type: counts from the header geometry alone.
				req.TypeAddr, req.Keys = 0, false
				r, err = Decode(context.Background(), mem, req)
				if err != nil {
					t.Fatalf("%s without type: %v", name, err)
				}
				sameFromCopy(t, name+" without type", v.pid, req, r)
				if r.Note == "" && m.Len > 0 {
					t.Errorf("%s without type: no note saying how it was decoded", name)
				}
				// Swiss inference is checked against each table's own used count,
				// so it must be exact; classic inference scores a 32-bucket sample
				// and is best effort (sparse or growing maps can fool it; the
				// result then carries count_mismatch), so it is only logged.
				if r.TypeSource == "inferred" && r.Stats.EntriesFound != int64(m.Len) && tgt.layout.Maps == goruntime.MapSwiss {
					t.Errorf("%s without type: inferred geometry found %d of %d", name, r.Stats.EntriesFound, m.Len)
				}
				t.Logf("%s without type: source=%s found=%d note=%q", name, r.TypeSource, r.Stats.EntriesFound, r.Note)
			}
		})
	}
}

// sameFromCopy copies the map (as the held phase does) and checks that
// decoding the copy gives the result of decoding the held process.
func sameFromCopy(t *testing.T, name string, pid int, req Request, want *Result) {
	t.Helper()
	mem, err := procmem.Open(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	cp := mem.Copy()
	est := Estimate(context.Background(), mem, req)
	if est > 0 {
		cp.Reserve(est)
	}
	if _, err := Copy(context.Background(), cp, req); err != nil {
		t.Fatalf("%s: copy: %v", name, err)
	}
	// The buffer set aside is the copy's size, not a loose bound: its
	// pages are populated before the hold and count in the daemon's RSS.
	if copied := cp.Stats().Bytes; est > uint64(copied)+uint64(copied)/8+1<<20 {
		t.Errorf("%s: estimate %d bytes for a copy of %d", name, est, copied)
	}
	got, err := Decode(context.Background(), cp.Image(), req)
	if err != nil {
		t.Fatalf("%s: decode of the copy: %v", name, err)
	}
	st := cp.Stats()
	t.Logf("%s: copied %d B in %d ranges, %d system calls", name, st.Bytes, st.Ranges, st.Calls)
	g, w := *got, *want
	g.Read, w.Read = ReadReport{}, ReadReport{}
	// An unreadable address is unreadable in both; only the error's words
	// differ (the copy's "bad address" against /proc/PID/mem's EIO).
	g.Anomalies, w.Anomalies = maskReadErrors(g.Anomalies), maskReadErrors(w.Anomalies)
	gj, _ := json.Marshal(g)
	wj, _ := json.Marshal(w)
	if string(gj) != string(wj) {
		t.Errorf("%s: decode of the copy differs from the decode of the held process:\n%.2000s\n%.2000s", name, gj, wj)
	}
}

func maskReadErrors(as []Anomaly) []Anomaly {
	out := append([]Anomaly(nil), as...)
	for i := range out {
		if out[i].Code == CodeUnreadable || out[i].Code == CodeOverflowUnmapped {
			if j := strings.Index(out[i].Detail, ": read "); j >= 0 {
				out[i].Detail = out[i].Detail[:j]
			}
		}
	}
	return out
}

// fileOffset converts a virtual address to the file offset a uprobe needs.
func fileOffset(ef *elf.File, va uint64) (uint64, error) {
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && va >= p.Vaddr && va < p.Vaddr+p.Filesz {
			return va - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("address %#x not in an executable segment", va)
}

// growFunc is the runtime function a map write calls, with the writing
// flag set, when an 8-entry map takes a 9th entry.
func growFunc(l *goruntime.Layout) string {
	if l.Maps == goruntime.MapClassic {
		return "runtime.hashGrow"
	}
	return "internal/runtime/maps.(*Map).growToTable"
}

func TestLiveWritingFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("live victims: not in -short")
	}
	testenv.RequirePrivileged(t)
	for _, b := range victimBuilds {
		if b.name != "go1.19" && b.name != "go1.26-stripped" && b.name != "go1.27-split" {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			bin := buildVictim(t, b)
			tgt := inspect(t, bin, b.stripped)
			tab, err := symbolizer.OpenFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			fn, ok := tab.LookupFunc(growFunc(tgt.layout))
			tab.Close()
			if !ok {
				t.Fatalf("%s not in pclntab", growFunc(tgt.layout))
			}
			ef, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			off, err := fileOffset(ef, fn.Entry)
			ef.Close()
			if err != nil {
				t.Fatal(err)
			}
			v := startVictim(t, bin, 10)
			detach := stopAtUprobe(t, bin, off, v.pid)
			defer detach()
			if _, err := io.WriteString(v.stdin, "grow\n"); err != nil {
				t.Fatal(err)
			}
			// The uprobe stops the writing thread (SIGSTOP), which stops the
			// whole process; resume in cleanup.
			id, err := procmem.IdentityOf(v.pid)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = id.Resume() })
			if _, ok, err := procmem.WaitStopped(v.pid, 10*time.Second); err != nil || !ok {
				t.Fatalf("victim did not stop at %s: ok=%v err=%v", fn.Name, ok, err)
			}
			mem, err := procmem.Open(v.pid, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			m := v.maps["write8"]
			addr, typ := m.addr(t)
			r, err := Decode(context.Background(), mem, Request{Addr: addr, Layout: tgt.layout, TypeAddr: typ, TypesBase: tgt.typesBase})
			if err != nil {
				t.Fatal(err)
			}
			var buf strings.Builder
			_ = RenderText(&buf, r)
			t.Logf("stopped in %s:\n%s", fn.Name, buf.String())
			if !codes(r)[CodeWritingFlag] {
				t.Errorf("writing flag not reported: flags %v anomalies %+v", r.Flags, r.Anomalies)
			}
			if r.Stats.EntriesFound != 8 {
				t.Errorf("found %d entries mid-write, want the 8 before the write", r.Stats.EntriesFound)
			}
			// Resumed, the write completes and the map is clean again.
			detach()
			_ = id.Resume()
			if !v.out.Scan() || v.out.Text() != "GREW" {
				t.Fatalf("victim did not finish the write: %q", v.out.Text())
			}
			freeze(t, v.pid)
			r, err = Decode(context.Background(), mem, Request{Addr: addr, Layout: tgt.layout, TypeAddr: typ, TypesBase: tgt.typesBase})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Anomalies) != 0 || r.Stats.EntriesFound != 9 {
				t.Errorf("after the write: found %d anomalies %+v", r.Stats.EntriesFound, r.Anomalies)
			}
		})
	}
}
