package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/report"
)

// diagnoseVictim builds (once) testdata/victims/diagnose for v into
// dir/diagnose/NAME; extra are more build flags (a rebuilt copy).
func (e *env) diagnoseVictim(t *testing.T, v variant, extra ...string) string {
	t.Helper()
	name := v.name
	if len(extra) > 0 {
		name += "-rebuilt"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.victims["diagnose/"+name]; ok {
		return p
	}
	out := filepath.Join(e.dir, "diagnose", name)
	if v.stripped {
		extra = append(extra, "-ldflags=-s -w")
	}
	src, _ := filepath.Abs("../testdata/victims/diagnose")
	testenv.BuildGo(t, src, v.toolchain, out, nil, extra...)
	e.victims["diagnose/"+name] = out
	return out
}

// diagnoseCrash runs the diagnose victim in mode to its crash and returns
// the report; livelocked victims (rare, the race's own fate) return false.
func (d *daemon) diagnoseCrash(t *testing.T, path, mode string) (report.Crash, *victim, bool) {
	t.Helper()
	v := startVictim(t, path, mode, "wait")
	d.waitAttached(t, v.pid)
	v.release()
	code, livelock := v.waitRace(t, 60*time.Second)
	if livelock != "" {
		t.Logf("%s %s: victim livelocked, not counted: %s", filepath.Base(path), mode, livelock)
		return report.Crash{}, v, false
	}
	if code != 2 {
		t.Errorf("%s %s: exit status %d, want 2", filepath.Base(path), mode, code)
	}
	cr := d.crashOf(t, v.pid)
	if got, want := fmt.Sprintf("%#x", mapAddr(cr)), printedMap(v.header); got != want {
		t.Errorf("%s %s: map %s, victim printed %s (%s)", filepath.Base(path), mode, got, want, mapError(cr))
	}
	return cr, v, true
}

func mapAddr(cr report.Crash) uint64 {
	if cr.Map == nil {
		return 0
	}
	return cr.Map.Addr
}

func mapError(cr report.Crash) string {
	if cr.Map == nil {
		return "no map"
	}
	return cr.Map.Error
}

// showText runs `mapsentry show ID` against d.
func (d *daemon) showText(t *testing.T, id string, args ...string) string {
	t.Helper()
	cmd := exec.Command(shared.mapsentry, append([]string{"show", id}, args...)...)
	cmd.Env = append(cmd.Environ(), d.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mapsentry show %s: %v\n%s", id, err, out)
	}
	return string(out)
}

// TestDiagnoseNamesTheMap: a package-level map written by two named
// functions is named (main.ledger) with both functions and file:line, on
// every toolchain; with DWARF a map held only in locals and one in a
// struct field are named too; stripped, nothing is named and the
// diagnosis still names both code paths.
func TestDiagnoseNamesTheMap(t *testing.T) {
	builds := []variant{
		{"go119", "go1.19", false, "go1.19", "classic"},
		{"go126", "go1.26", false, "go1.26", "swiss"},
		{"go127", "go1.27", false, "go1.27.3", "swiss"},
		{"go126s", "go1.26", true, "go1.26", "swiss"},
	}
	scope := filepath.Join(shared.dir, "diagnose")
	paths := map[string]string{}
	for _, v := range builds {
		paths[v.name] = shared.diagnoseVictim(t, v)
	}
	d := startDaemon(t, scope, "")
	for _, v := range builds {
		for _, tc := range []struct {
			mode, name, source string
			fns                []string
		}{
			{"global", "main.ledger", report.SourceSymbolTable, []string{"main.deposit", "main.withdraw"}},
			{"local", "accounts", report.SourceDWARFLocal, []string{"main.credit", "main.debit"}},
			{"field", "s.sessions", report.SourceDWARFField, []string{"main.(*server).login", "main.(*server).logout"}},
		} {
			if v.stripped && tc.mode != "global" {
				continue
			}
			t.Run(v.name+"/"+tc.mode, func(t *testing.T) {
				cr, _, ok := d.diagnoseCrash(t, paths[v.name], tc.mode)
				if !ok {
					return
				}
				dg := cr.Diagnosis
				if dg == nil {
					t.Fatalf("no diagnosis; map %+v, partners %+v", cr.Map, cr.Partners)
				}
				t.Logf("diagnosis: %s [%s]", dg.Sentence, dg.Strength)
				wantName, wantSource := tc.name, tc.source
				if v.stripped {
					wantName, wantSource = report.UnknownStripped, report.SourceStripped
				}
				if dg.Variable == nil || dg.Variable.Name != wantName || dg.Variable.Source != wantSource {
					t.Errorf("variable %+v, want %s from %s (notes %q)", dg.Variable, wantName, wantSource, dg.Notes)
				}
				if v.stripped && strings.Contains(dg.Sentence, "main.ledger") {
					t.Errorf("stripped binary, but the diagnosis names a variable: %s", dg.Sentence)
				}
				// Both code paths, with file:line, in the sentence.
				if len(dg.Paths) != 2 {
					t.Fatalf("code paths %+v, want 2 (partners %+v)", dg.Paths, cr.Partners)
				}
				got := map[string]bool{}
				for _, p := range dg.Paths {
					got[p.Function] = true
					at := fmt.Sprintf("main.go:%d (%s)", p.Line, p.Function)
					if p.Line == 0 || !strings.Contains(dg.Sentence, at) {
						t.Errorf("sentence lacks %q: %s", at, dg.Sentence)
					}
				}
				for _, fn := range tc.fns {
					if !got[fn] {
						t.Errorf("code paths %+v lack %s", dg.Paths, fn)
					}
				}
				if !v.stripped && !strings.Contains(dg.Sentence, tc.name) {
					t.Errorf("sentence does not name %s: %s", tc.name, dg.Sentence)
				}
				// show prints the diagnosis first.
				out := d.showText(t, cr.ID)
				if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, "diagnosis") || !strings.Contains(first, dg.Sentence) {
					t.Errorf("show's first line is %q, want the diagnosis", first)
				}
			})
		}
	}
}

