package store

import (
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

// TestGroupsIndex: crashes group by signature; an update that changes a
// crash's signature moves it; deleted and retired crashes leave their
// group; loop summaries add to their signature's group.
func TestGroupsIndex(t *testing.T) {
	s, err := Open(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1000, 0).UTC()
	put := func(id, sig, exe string, at time.Time) {
		c := &report.Crash{ID: id, CapturedAt: at, Fatal: report.Fatal{Kind: report.KindMapConcurrentWrite},
			Process: report.Process{Exe: exe, GoVersion: "go1.26"}, Diagnosis: &report.Diagnosis{Signature: sig}}
		if err := s.PutCrash(c); err != nil {
			t.Fatal(err)
		}
	}
	put("0001", "s1-a", "/bin/x", t0)
	put("0002", "s1-a", "/bin/y", t0.Add(time.Second))
	put("0003", "s1-b", "/bin/x", t0.Add(2*time.Second))
	groups := func() map[string]report.Group {
		gs, err := s.Groups()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]report.Group{}
		for _, g := range gs {
			out[g.Signature] = g
		}
		return out
	}
	g := groups()
	if a := g["s1-a"]; a.Count != 2 || len(a.Binaries) != 2 || a.ExampleID != "0002" || !a.FirstSeen.Equal(t0) || !a.LastSeen.Equal(t0.Add(time.Second)) {
		t.Fatalf("group s1-a %+v", a)
	}
	if err := s.UpdateCrash("0001", func(c *report.Crash) { c.Diagnosis.Signature = "s1-b" }); err != nil {
		t.Fatal(err)
	}
	if g := groups(); g["s1-a"].Count != 1 || g["s1-b"].Count != 2 {
		t.Fatalf("after moving 0001: %+v", g)
	}
	if err := s.DeleteCrash("0003"); err != nil {
		t.Fatal(err)
	}
	put("0004", "s1-c", "/bin/x", t0.Add(3*time.Second))
	put("0005", "s1-c", "/bin/x", t0.Add(4*time.Second)) // retires 0001 (retain 3)
	g = groups()
	if _, ok := g["s1-b"]; ok || g["s1-a"].Count != 1 || g["s1-c"].Count != 2 {
		t.Fatalf("after delete and retirement: %+v", g)
	}
	if err := s.AddSuppressed(LoopSummary{Key: "k", Interval: t0, Signature: "s1-c", Kind: report.KindMapConcurrentWrite, Exe: "/bin/x"}, 42, t0.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSuppressed(LoopSummary{Key: "k", Interval: t0, Signature: "s1-c", Kind: report.KindMapConcurrentWrite, Exe: "/bin/x"}, 43, t0.Add(6*time.Second)); err != nil {
		t.Fatal(err)
	}
	c := groups()["s1-c"]
	if c.Count != 4 || c.Captured != 2 || c.Suppressed != 2 || !c.LastSeen.Equal(t0.Add(6*time.Second)) {
		t.Fatalf("group with loop summaries %+v", c)
	}
	ls, err := s.Loops()
	if err != nil || len(ls) != 1 || ls[0].Suppressed != 2 || len(ls[0].PIDs) != 2 {
		t.Fatalf("loop summaries %+v, %v", ls, err)
	}
}
