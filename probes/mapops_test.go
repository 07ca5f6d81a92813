package probes

import (
	"os"
	"testing"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// Every map function the victims use gets a probe past its prologue on an
// emulated instruction, never at the entry; Go 1.19 builds its frames with
// SUB, so its probes sit on the JBE; Go 1.27's mapaccess2_fast64 is called
// by the mapaccess1_fast64 wrapper and records the caller's caller.
func TestPlanMapOpsEveryToolchain(t *testing.T) {
	for _, tc := range testenv.Toolchains() {
		for _, stripped := range []bool{false, true} {
			path := buildVictim(t, tc, stripped)
			b, err := Inspect(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := b.PlanMapOps(f)
			f.Close()
			b.Close()
			if err != nil {
				t.Fatalf("%s: %v", tc, err)
			}
			if len(plan.Refused) > 0 {
				t.Errorf("%s stripped=%v: refused %+v", tc, stripped, plan.Refused)
			}
			byName := map[string]MapOpProbe{}
			for _, p := range plan.Probes {
				byName[p.Name] = p
				if p.Offset == 0 || p.FileOffset-p.Offset == 0 {
					t.Errorf("%s %s: offset %d", tc, p.Name, p.Offset)
				}
			}
			for _, want := range []string{"runtime.mapassign_fast64", "runtime.mapaccess1_fast64", "runtime.mapaccess2_fast64"} {
				p, ok := byName[want]
				if !ok {
					t.Errorf("%s: %s not planned (have %v)", tc, want, plan.ProbeNames())
					continue
				}
				wantAt := "PUSHQ BP"
				if tc == "go1.19" {
					wantAt = "JBE"
				}
				if p.At != wantAt {
					t.Errorf("%s %s: at %s+%d, want %s", tc, want, p.At, p.Offset, wantAt)
				}
			}
			if got := byName["runtime.mapaccess2_fast64"].Caller2; got != (tc == "go1.27") {
				t.Errorf("%s: mapaccess2_fast64 caller2=%v", tc, got)
			}
			if byName["runtime.mapassign_fast64"].Caller2 {
				t.Errorf("%s: mapassign_fast64 marked as called by a map function", tc)
			}
			t.Logf("%s stripped=%v: %v", tc, stripped, plan.ProbeNames())
		}
	}
}
