package capture

import (
	"testing"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/report"
)

func TestPartnersFromRecords(t *testing.T) {
	const fatal = 1_000_000
	recs := []record{
		{MapOp: bpf.MapOp{Tid: 70, Op: bpf.MapOpAssign, Ktime: fatal - 500}, Goid: 7},   // crasher
		{MapOp: bpf.MapOp{Tid: 80, Op: bpf.MapOpAssign, Ktime: fatal - 900}, Goid: 8},   // the other writer
		{MapOp: bpf.MapOp{Tid: 80, Op: bpf.MapOpAccess, Ktime: fatal - 100}, Goid: 8},   // ... which read later
		{MapOp: bpf.MapOp{Tid: 90, Op: bpf.MapOpAccess, Ktime: fatal - 50}, Goid: 9},    // a reader
		{MapOp: bpf.MapOp{Tid: 70, Op: bpf.MapOpAssign, Ktime: fatal - 40}, Goid: -1},   // unknown goid on the crashing thread
		{MapOp: bpf.MapOp{Tid: 91, Op: bpf.MapOpDelete, Ktime: fatal - 2000}, Goid: -1}, // unknown goid elsewhere
	}
	got := partnersFromRecords(recs, 7, 70, fatal, nil)
	if len(got) != 3 {
		t.Fatalf("partners %+v", got)
	}
	// Writers first, most recent first; goroutine 8 reported by its write.
	if got[0].Goid != 8 || got[0].Op != "assign" || got[0].AgoNS != 900 || got[0].TID != 80 {
		t.Errorf("first partner %+v", got[0])
	}
	if got[1].Goid != -1 || got[1].TID != 91 || got[1].Op != "delete" {
		t.Errorf("second partner %+v", got[1])
	}
	if got[2].Goid != 9 || got[2].Op != "access" || got[2].AgoNS != 50 {
		t.Errorf("third partner %+v", got[2])
	}
	for _, p := range got {
		if p.Evidence != report.EvidenceFlightRecorder || p.Rank != 2 {
			t.Errorf("evidence %+v", p)
		}
	}
}

func TestMergePartners(t *testing.T) {
	have := []report.Partner{
		{Goid: 8, TID: 80, Evidence: report.EvidenceFatalSameMap, Rank: 1, MapFunction: "runtime.mapassign_fast64", Op: "assign"},
		{Goid: 9, Evidence: report.EvidenceRunning, Rank: 4, Function: "main.reader"},
	}
	mine := []report.Partner{
		{Goid: 8, TID: 80, Evidence: report.EvidenceFlightRecorder, Rank: 2, Function: "main.writerB", File: "main.go", Line: 30, AgoNS: 900, Op: "assign"},
		{Goid: 9, TID: 90, Evidence: report.EvidenceFlightRecorder, Rank: 2, Function: "main.reader", Line: 40, AgoNS: 50, Op: "access"},
		{Goid: 11, TID: 110, Evidence: report.EvidenceFlightRecorder, Rank: 2, Function: "main.writerA", AgoNS: 10, Op: "assign"},
	}
	got := mergePartners(have, mine)
	if len(got) != 3 {
		t.Fatalf("merged %+v", got)
	}
	if p := got[0]; p.Goid != 8 || p.Evidence != report.EvidenceFatalSameMap || p.Function != "main.writerB" || p.AgoNS != 900 || p.Rank != 1 {
		t.Errorf("goroutine 8: %+v", p)
	}
	if p := got[1]; p.Goid != 9 || p.Evidence != report.EvidenceFlightRecorder || p.Line != 40 || p.Rank != 2 {
		t.Errorf("goroutine 9: %+v", p)
	}
	if p := got[2]; p.Goid != 11 || p.Rank != 2 {
		t.Errorf("goroutine 11: %+v", p)
	}
}
