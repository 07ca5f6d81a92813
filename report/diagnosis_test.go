package report

import (
	"strings"
	"testing"

	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/symbolizer"
)

func raceCrash(kind Kind, crasherFn, crasherFile string, line int, partnerFn string, partnerOp, evidence string) *Crash {
	c := &Crash{
		ID:    "x",
		Fatal: Fatal{Kind: kind, Events: []Event{{Goid: 7}}},
		Map: &Map{Addr: 0xc000123456, Op: "assign", CallSite: &symbolizer.Frame{Function: crasherFn, File: crasherFile, Line: line, PC: 0x4a2175},
			Result: &hmapdecode.Result{GoType: "map[int]int"}},
		Process: Process{BuildID: "abc", Exe: "/srv/bank"},
	}
	if partnerFn != "" {
		c.Partners = []Partner{{Goid: 12, Function: partnerFn, File: "/src/bank/bank.go", Line: 47, Op: partnerOp, Evidence: evidence, Rank: EvidenceRank(evidence)}}
	}
	return c
}

func TestDiagnoseSentences(t *testing.T) {
	ledger := &Variable{Name: "main.ledger", Source: SourceSymbolTable}
	for _, tc := range []struct {
		kind     Kind
		op       string
		v        *Variable
		partner  string
		evidence string
		want     []string
	}{
		{KindMapConcurrentWrite, "assign", ledger, "main.withdraw", EvidenceMapFunction, []string{
			"goroutines 7 and 12 wrote map main.ledger concurrently at bank.go:31 (main.deposit) and bank.go:47 (main.withdraw)", "sync.Mutex"}},
		{KindMapReadWrite, "assign", ledger, "main.withdraw", EvidenceFlightRecorder, []string{
			"read map main.ledger at bank.go:31 (main.deposit) while goroutine", "wrote it at bank.go:47 (main.withdraw)", "RWMutex"}},
		{KindMapIterationWrite, "assign", ledger, "main.withdraw", EvidenceStackHoldsMap, []string{"iterated over map main.ledger", "range loop"}},
		{KindMapCloneWrite, "assign", ledger, "main.withdraw", EvidenceStackHoldsMap, []string{"cloned map main.ledger", "clone under the same lock"}},
		{KindMapCorrupted, "assign", ledger, "main.withdraw", EvidenceHoldsMap, []string{"Map main.ledger was found corrupted", "bank.go:47 (main.withdraw)"}},
		{KindMapConcurrentWrite, "assign", &Variable{Name: UnknownStripped, Source: SourceStripped}, "main.withdraw", EvidenceRunning, []string{
			"a map of type map[int]int (variable unknown: stripped binary)", "bank.go:31 (main.deposit) and bank.go:47 (main.withdraw)"}},
		{KindMapConcurrentWrite, "assign", ledger, "", "", []string{"its code path was not found"}},
		{KindMapConcurrentWrite, "assign", &Variable{Source: SourceTypeOnly, AllocSite: &Site{Function: "main.newLedger", File: "/src/bank/ledger.go", Line: 18}}, "main.withdraw", EvidenceRunning, []string{
			"wrote a map of type map[int]int allocated at ledger.go:18 (main.newLedger) concurrently at bank.go:31 (main.deposit)"}},
		{KindMapConcurrentWrite, "assign", &Variable{Source: SourceTypeOnly, AllocNote: "allocation site unknown"}, "main.withdraw", EvidenceRunning, []string{
			"wrote a map of type map[int]int concurrently"}},
	} {
		c := raceCrash(tc.kind, "main.deposit", "/src/bank/bank.go", 31, tc.partner, "", tc.evidence)
		if tc.kind != KindMapConcurrentWrite && tc.kind != KindMapCorrupted {
			c.Map.Op = "access" // the crasher is the reader; the partner writes
			c.Partners[0].Op = "assign"
		}
		d := &Diagnosis{Variable: tc.v}
		Diagnose(c, d)
		for _, w := range tc.want {
			if !strings.Contains(d.Sentence, w) {
				t.Errorf("%s: sentence %q lacks %q", tc.kind, d.Sentence, w)
			}
		}
		if tc.v.Source == SourceStripped && strings.Contains(d.Sentence, "main.ledger") {
			t.Errorf("stripped: the sentence names a variable: %s", d.Sentence)
		}
		if want := StrengthOf(tc.evidence); d.Strength != want {
			t.Errorf("%s: strength %q, want %q", tc.kind, d.Strength, want)
		}
	}
}

// TestSignatureStable: builds of the same source differ in addresses,
// build ids, paths and lines; the signature does not. Either side may
// crash. Another function, kind or variable is another signature.
func TestSignatureStable(t *testing.T) {
	v := &Variable{Name: "main.ledger", Source: SourceSymbolTable}
	a := raceCrash(KindMapConcurrentWrite, "main.deposit", "/src/bank/bank.go", 31, "main.withdraw", "assign", EvidenceMapFunction)
	b := raceCrash(KindMapConcurrentWrite, "main.withdraw", "/build/x/bank.go", 48, "main.deposit", "assign", EvidenceStackHoldsMap)
	b.Map.Addr, b.Map.CallSite.PC, b.Process.BuildID = 0x7f0000001000, 0x401000, "def"
	if Signature(a, v) != Signature(b, v) {
		t.Errorf("same race, two builds: %s != %s", Signature(a, v), Signature(b, v))
	}
	for _, other := range []*Crash{
		raceCrash(KindMapReadWrite, "main.deposit", "/src/bank/bank.go", 31, "main.withdraw", "assign", EvidenceMapFunction),
		raceCrash(KindMapConcurrentWrite, "main.deposit", "/src/bank/bank.go", 31, "main.audit", "assign", EvidenceMapFunction),
	} {
		if Signature(other, v) == Signature(a, v) {
			t.Errorf("a different race has the same signature")
		}
	}
	if Signature(a, &Variable{Name: "main.other", Source: SourceSymbolTable}) == Signature(a, v) {
		t.Error("another variable has the same signature")
	}
	if !strings.HasPrefix(Signature(a, v), SignatureVersion+"-") || len(Signature(a, v)) != len(SignatureVersion)+17 {
		t.Errorf("signature %q: want %s- and 16 hex digits", Signature(a, v), SignatureVersion)
	}
}
