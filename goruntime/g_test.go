package goruntime

import (
	"debug/dwarf"
	"debug/elf"
	"path/filepath"
	"testing"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// TestGTableMatchesDWARF builds a victim with each installed toolchain and
// checks the built-in g and m tables against the binary's DWARF.
func TestGTableMatchesDWARF(t *testing.T) {
	minors := map[string]int{"go1.19": 19, "go1.26": 26, "go1.27": 27}
	for _, tc := range testenv.Toolchains() {
		t.Run(tc, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "victim")
			testenv.BuildGo(t, "../symbolizer/testdata/victim", tc, out, nil)
			f, err := elf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			d, err := f.DWARF()
			if err != nil {
				t.Fatal(err)
			}
			g := gTable(minors[tc])
			want := map[string]Offset{"stack.lo": g.StackLo, "stack.hi": g.StackHi, "m": g.M,
				"sched.sp": g.SchedSP, "sched.pc": g.SchedPC, "sched.bp": g.SchedBP,
				"syscallsp": g.SyscallSP, "syscallpc": g.SyscallPC, "syscallbp": g.SyscallBP,
				"atomicstatus": g.AtomicStatus, "goid": g.Goid, "waitsince": g.WaitSince,
				"waitreason": g.WaitReason, "gopc": g.GoPC, "startpc": g.StartPC, "lockedm": g.LockedM,
				"parentGoid": g.ParentGoid}
			checkFields(t, d, "runtime.g", want)
			m := MOffsetsFor(minors[tc])
			checkFields(t, d, "runtime.m", map[string]Offset{"g0": m.G0, "curg": m.Curg, "procid": m.ProcID,
				"p": m.P, "id": m.ID, "lockedg": m.LockedG})
		})
	}
}

func checkFields(t *testing.T, d *dwarf.Data, typ string, want map[string]Offset) {
	t.Helper()
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	got, err := StructFields(d, typ, names...)
	if err != nil {
		t.Fatal(err)
	}
	for k, w := range want {
		v, ok := got[k]
		if !ok {
			v = int64(Unknown)
		}
		if Offset(v) != w {
			t.Errorf("%s.%s: table %d, DWARF %d", typ, k, w, v)
		}
	}
}
