package symbolizer

import (
	"strings"
	"testing"

	"github.com/mapsentry/mapsentry/goruntime"
)

func TestSymbolizeAndText(t *testing.T) {
	tab, err := OpenFile(victim(t, variant{toolchain: "go1.26", stripped: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	recv, _ := tab.LookupFunc("main.chanRecv")
	mainFn, _ := tab.LookupFunc("main.main")
	snap := &Snapshot{GoMinor: 26, Nanotime: 10 * 60e9, Goroutines: []RawGoroutine{{
		ID: 7, Status: goruntime.GWaiting, WaitReason: 19, // chan receive in 1.26
		WaitSince: 60e9 + 1, LockedM: true, MID: 3, PID: -1, TID: 99, ParentID: 1,
		GoPC: mainFn.Entry + 0x20, PCs: []uint64{recv.Entry + 0x10},
	}}}
	gs := snap.Symbolize(tab)
	g := gs[0]
	if g.WaitReason != "chan receive" || g.WaitMinutes != 8 || g.Thread != 0 || *g.M != 3 || g.P != nil {
		t.Fatalf("%+v", g)
	}
	var b strings.Builder
	if err := WriteTraceback(&b, gs); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"goroutine 7 [chan receive, 8 minutes, locked to thread]:\n",
		"main.chanRecv(...)\n\t",
		"created by main.main in goroutine 1\n\t",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if GStatus := goruntime.GStatusName(26, goruntime.GScan|goruntime.GRunnable); GStatus != "runnable" {
		t.Errorf("scan bit not masked: %q", GStatus)
	}
}
