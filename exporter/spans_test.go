package exporter

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mapsentry/mapsentry/report"
)

var t0 = time.Date(2026, 3, 14, 9, 26, 53, 589_793_000, time.UTC)

func attrMap(kvs []attribute.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

func spansByName(t *testing.T, spans []sdktrace.ReadOnlySpan) map[string]sdktrace.ReadOnlySpan {
	t.Helper()
	m := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if _, dup := m[s.Name()]; dup {
			t.Fatalf("two spans named %q", s.Name())
		}
		m[s.Name()] = s
	}
	return m
}

func TestCrashSpansRoot(t *testing.T) {
	c := sampleCrash("18a0000000000001deadbeef", t0)
	spans, err := CrashSpans(c)
	if err != nil {
		t.Fatal(err)
	}
	byName := spansByName(t, spans)
	root := spans[0]
	if root.Name() != "map_concurrent_write" {
		t.Errorf("root name = %q", root.Name())
	}
	if root.Parent().IsValid() {
		t.Errorf("root has a parent")
	}
	if got := root.SpanContext().TraceID(); got != TraceID(c.ID) {
		t.Errorf("trace id %s, want %s", got, TraceID(c.ID))
	}
	if !root.StartTime().Equal(t0) {
		t.Errorf("root start %v, want first fatal event %v", root.StartTime(), t0)
	}
	if want := t0.Add(4500 * time.Microsecond); !root.EndTime().Equal(want) {
		t.Errorf("root end %v, want resume %v", root.EndTime(), want)
	}
	if root.Status().Code != codes.Error || root.Status().Description != "concurrent map writes" {
		t.Errorf("status = %+v", root.Status())
	}
	a := attrMap(root.Attributes())
	for k, want := range map[string]any{
		"exception.type":                       "fatal error",
		"exception.message":                    "concurrent map writes",
		"mapsentry.fatal.kind":                 "map_concurrent_write",
		"code.function":                        "internal/runtime/maps.(*Map).putSlowPath",
		"thread.id":                            int64(4250),
		"mapsentry.goroutine.id":               int64(34),
		"mapsentry.fatal.events":               int64(2),
		"mapsentry.fatal.threads":              int64(2),
		"mapsentry.freeze.frozen_ns":           int64(4_500_000),
		"mapsentry.freeze.deadline_hit":        false,
		"mapsentry.process.exit_status":        int64(2),
		"mapsentry.crash.id":                   c.ID,
		"mapsentry.capture.duration_ns":        int64(3_200_000),
		"mapsentry.freeze.all_threads_stopped": true,
	} {
		if !reflect.DeepEqual(a[k], want) {
			t.Errorf("root %s = %#v, want %#v", k, a[k], want)
		}
	}
	for _, absent := range []string{"exception.stacktrace", "mapsentry.map.addr", "code.filepath", "mapsentry.goroutines.count"} {
		if _, ok := a[absent]; ok {
			t.Errorf("root has %s although the report has no data for it", absent)
		}
	}
	if got := len(root.Events()); got != 2 {
		t.Fatalf("root has %d events, want one per fatal event (2)", got)
	}
	ev := root.Events()[1]
	if ev.Name != "fatal" || !ev.Time.Equal(t0.Add(40*time.Microsecond)) {
		t.Errorf("second fatal event %q at %v", ev.Name, ev.Time)
	}
	if ea := attrMap(ev.Attributes); ea["thread.id"] != int64(4251) || ea["mapsentry.fatal.pc"] != "0x4a1b20" {
		t.Errorf("fatal event attributes %v", ea)
	}

	r := attrMap(root.Resource().Attributes())
	for k, want := range map[string]any{
		"service.name":                   "orders-api",
		"service.instance.id":            "build-host-1/4242/987654",
		"process.pid":                    int64(4242),
		"process.executable.path":        "/usr/local/bin/orders-api",
		"process.command_line":           "/usr/local/bin/orders-api -listen 127.0.0.1:8080",
		"process.runtime.name":           "go",
		"process.runtime.version":        "go1.26.8",
		"host.name":                      "build-host-1",
		"mapsentry.process.map_layout":   "swiss",
		"mapsentry.process.systemd_unit": "orders-api.service",
	} {
		if !reflect.DeepEqual(r[k], want) {
			t.Errorf("resource %s = %#v, want %#v", k, r[k], want)
		}
	}
	if _, ok := r["container.id"]; ok {
		t.Errorf("container.id set for a process outside a container")
	}

	// Phase spans: freeze (until all threads stopped), capture right
	// after it, resume for the rest of the freeze.
	for name, want := range map[string][2]time.Duration{
		"freeze":  {0, 300 * time.Microsecond},
		"capture": {300 * time.Microsecond, 3200 * time.Microsecond},
		"resume":  {3200 * time.Microsecond, 4500 * time.Microsecond},
	} {
		s, ok := byName[name]
		if !ok {
			t.Errorf("no %s span", name)
			continue
		}
		if s.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("%s span is not a child of the root", name)
		}
		if !s.StartTime().Equal(t0.Add(want[0])) || !s.EndTime().Equal(t0.Add(want[1])) {
			t.Errorf("%s span %v..%v, want +%v..+%v", name, s.StartTime().Sub(t0), s.EndTime().Sub(t0), want[0], want[1])
		}
	}
	if len(spans) != 4 {
		t.Errorf("%d spans, want root, freeze, capture, resume", len(spans))
	}
}

func TestCrashSpansDeterministic(t *testing.T) {
	c := sampleCrash("18a0000000000002cafef00d", t0)
	a, err := CrashSpans(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := CrashSpans(c)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tracetest.SpanStubsFromReadOnlySpans(a), tracetest.SpanStubsFromReadOnlySpans(b)) {
		t.Fatal("mapping the same crash twice gave different spans")
	}
	seen := map[string]bool{}
	for _, s := range a {
		id := s.SpanContext().SpanID().String()
		if seen[id] {
			t.Errorf("span id %s used twice", id)
		}
		seen[id] = true
	}
	other, err := CrashSpans(sampleCrash("18a0000000000003cafef00d", t0))
	if err != nil {
		t.Fatal(err)
	}
	if other[0].SpanContext().TraceID() == a[0].SpanContext().TraceID() || seen[other[0].SpanContext().SpanID().String()] {
		t.Error("different crashes share ids")
	}
}

func TestCrashSpansRichReport(t *testing.T) {
	c := sampleCrash("18a0000000000004", t0)
	spans, err := viewSpans(richView(c))
	if err != nil {
		t.Fatal(err)
	}
	byName := spansByName(t, spans)
	root := spans[0]
	a := attrMap(root.Attributes())
	for k, want := range map[string]any{
		"code.function":                           "main.(*Store).Put",
		"code.filepath":                           "/src/orders/store.go",
		"code.lineno":                             int64(41),
		"mapsentry.map.addr":                      "0xc000112000",
		"mapsentry.map.go_type":                   "map[string]*main.Session",
		"mapsentry.map.layout":                    "swiss",
		"mapsentry.map.header.count":              int64(1234),
		"mapsentry.map.header.used":               int64(1234),
		"mapsentry.map.header.dir_ptr":            "0xc000200000",
		"mapsentry.map.header.dir_len":            int64(4),
		"mapsentry.map.header.global_depth":       int64(2),
		"mapsentry.map.header.writing":            int64(1),
		"mapsentry.map.header.tombstone_possible": true,
		"mapsentry.map.found_by":                  "spill slots of internal/runtime/maps.(*Map).putSlowPath",
		"mapsentry.map.op":                        "assign",
		"mapsentry.map.type_source":               "descriptor",
		"mapsentry.map.flags":                     []string{"writing"},
		"mapsentry.map.entries_found":             int64(1233),
		"mapsentry.map.anomalies":                 int64(2),
		"mapsentry.goroutines.count":              int64(3),
	} {
		if !reflect.DeepEqual(a[k], want) {
			t.Errorf("root %s = %#v, want %#v", k, a[k], want)
		}
	}
	wantStack := strings.Join([]string{
		"goroutine 34 [running]:",
		"internal/runtime/maps.fatal(...)",
		"\t/usr/lib/go/src/runtime/panic.go:1058",
		"internal/runtime/maps.(*Map).putSlowPath(...)",
		"\t/usr/lib/go/src/internal/runtime/maps/map.go:500",
		"main.(*Store).Put(...)",
		"\t/src/orders/store.go:41",
		"main.handle(...)",
		"\t/src/orders/main.go:77",
		"created by main.serve in goroutine 1",
		"\t/src/orders/main.go:60 +0x0",
	}, "\n")
	if got := a["exception.stacktrace"]; got != wantStack {
		t.Errorf("exception.stacktrace =\n%v\nwant\n%s", got, wantStack)
	}
	// The stack trace is the last attribute: long values read best at the end.
	if last := root.Attributes()[len(root.Attributes())-1].Key; last != "exception.stacktrace" {
		t.Errorf("last root attribute is %s", last)
	}

	var partners, anomalies []sdktrace.Event
	for _, e := range root.Events() {
		switch e.Name {
		case "partner goroutine":
			partners = append(partners, e)
		case "map anomaly":
			anomalies = append(anomalies, e)
		}
	}
	if len(partners) != 1 || len(anomalies) != 2 {
		t.Fatalf("%d partner and %d anomaly events, want 1 and 2", len(partners), len(anomalies))
	}
	pa := attrMap(partners[0].Attributes)
	if _, ok := a["mapsentry.map.header.seed"]; ok {
		t.Error("the map's hash seed is exported")
	}
	if pa["mapsentry.partner.op"] != "assign" || pa["mapsentry.partner.rank"] != int64(1) || pa["mapsentry.partner.evidence"] != "fatal_same_map" || pa["code.lineno"] != int64(41) || pa["mapsentry.goroutine.id"] != int64(35) {
		t.Errorf("partner event attributes %v", pa)
	}
	if !partners[0].Time.Equal(t0.Add(-15 * time.Microsecond)) {
		t.Errorf("partner event at %v, want 15µs before the fatal event", partners[0].Time.Sub(t0))
	}
	if !anomalies[0].Time.Equal(t0.Add(1400 * time.Microsecond)) {
		t.Errorf("anomaly event at +%v, want the end of the map decode (+1.4ms)", anomalies[0].Time.Sub(t0))
	}
	if aa := attrMap(anomalies[0].Attributes); aa["mapsentry.anomaly.code"] != "used_mismatch" || aa["mapsentry.anomaly.severity"] != "error" {
		t.Errorf("anomaly event attributes %v", aa)
	}

	capture := byName["capture"]
	for name, want := range map[string][2]time.Duration{
		"map decode":     {300 * time.Microsecond, 1400 * time.Microsecond},
		"goroutine dump": {1400 * time.Microsecond, 3100 * time.Microsecond},
	} {
		s, ok := byName[name]
		if !ok {
			t.Errorf("no %s span", name)
			continue
		}
		if s.Parent().SpanID() != capture.SpanContext().SpanID() {
			t.Errorf("%s is not a child of capture", name)
		}
		if !s.StartTime().Equal(t0.Add(want[0])) || !s.EndTime().Equal(t0.Add(want[1])) {
			t.Errorf("%s span +%v..+%v, want +%v..+%v", name, s.StartTime().Sub(t0), s.EndTime().Sub(t0), want[0], want[1])
		}
	}
	if got := capture.ChildSpanCount(); got != 2 {
		t.Errorf("capture child count %d", got)
	}
}

func TestCrashSpansSparseReport(t *testing.T) {
	// A report whose capture failed early: no thread-stop time, no capture,
	// no command line (redacted), in a container.
	c := sampleCrash("18a0000000000005", t0)
	c.Process.Cmdline = nil
	c.Process.Unit = ""
	c.Process.Container = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa99887766554433221100"
	c.Freeze = report.Freeze{FrozenNS: 2_000_000_000, DeadlineHit: true}
	c.Capture = report.Capture{Missing: []string{"goroutines", "map"}}
	spans, err := CrashSpans(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 1 {
		t.Errorf("%d spans, want only the root when no phase was measured", len(spans))
	}
	r := attrMap(spans[0].Resource().Attributes())
	if _, ok := r["process.command_line"]; ok {
		t.Error("process.command_line exported for a redacted command line")
	}
	if r["service.name"] != "3f4e5d6c7b8a" || r["container.id"] != c.Process.Container {
		t.Errorf("service.name %v container.id %v", r["service.name"], r["container.id"])
	}
	a := attrMap(spans[0].Attributes())
	if !reflect.DeepEqual(a["mapsentry.capture.missing"], []string{"goroutines", "map"}) || a["mapsentry.freeze.deadline_hit"] != true {
		t.Errorf("missing/deadline attributes: %v %v", a["mapsentry.capture.missing"], a["mapsentry.freeze.deadline_hit"])
	}
}

func TestServiceNameOrder(t *testing.T) {
	for _, tc := range []struct {
		p    report.Process
		want string
	}{
		{report.Process{Unit: "a.service", Container: "c", Exe: "/bin/e"}, "a"},
		{report.Process{Unit: "a.scope", Exe: "/bin/e"}, "a.scope"},
		{report.Process{Container: "web-1", Exe: "/bin/e"}, "web-1"},
		{report.Process{Exe: "/opt/app/bin/e"}, "e"},
		{report.Process{}, "unknown_service"},
	} {
		if got := ServiceName(tc.p); got != tc.want {
			t.Errorf("ServiceName(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestCrashSpansInvalid(t *testing.T) {
	if _, err := CrashSpans(report.Crash{}); !errors.Is(err, ErrInvalidCrash) {
		t.Errorf("empty crash: %v, want ErrInvalidCrash", err)
	}
	if _, err := CrashSpans(report.Crash{ID: "x"}); !errors.Is(err, ErrInvalidCrash) {
		t.Errorf("crash without time: %v, want ErrInvalidCrash", err)
	}
	// No fatal event times: fall back to capture time minus the freeze.
	spans, err := CrashSpans(report.Crash{ID: "y", CapturedAt: t0, Freeze: report.Freeze{FrozenNS: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	if !spans[0].StartTime().Equal(t0.Add(-1000)) || spans[0].Name() != "other_fatal" {
		t.Errorf("fallback start %v name %q", spans[0].StartTime(), spans[0].Name())
	}
}

func TestTraceIDStable(t *testing.T) {
	// Pinned: changing the derivation would duplicate every trace already
	// exported by an older daemon when it re-exports.
	const want = "9cf49d02d51d4260deb0649ff1a200ff" // sha256("mapsentry/crash/18a0000000000001deadbeef")[:16]
	if got := TraceID("18a0000000000001deadbeef").String(); got != want {
		t.Fatalf("TraceID = %s, want %s", got, want)
	}
}

// TestRootSpanSaysTheDiagnosis: with a diagnosis the root span is named
// after it (no goroutine ids or lines: one name per race) and carries the
// sentence and the signature.
func TestRootSpanSaysTheDiagnosis(t *testing.T) {
	c := report.Crash{ID: "18ee18766baff3435ee2b3e1", CapturedAt: time.Unix(1, 0),
		Fatal: report.Fatal{Kind: report.KindMapConcurrentWrite, Message: "concurrent map writes"},
		Diagnosis: &report.Diagnosis{Sentence: "goroutines 7 and 12 wrote map main.ledger ...", Strength: report.StrengthCertain,
			Signature: "s1-0123456789abcdef", Variable: &report.Variable{Name: "main.ledger", Source: report.SourceSymbolTable},
			Paths: []report.CodePath{{Goid: 7, Function: "main.deposit", Line: 31}, {Goid: 12, Function: "main.withdraw", Line: 47}}}}
	spans, err := CrashSpans(c)
	if err != nil {
		t.Fatal(err)
	}
	root := spans[0]
	if want := "map_concurrent_write main.ledger: main.deposit / main.withdraw"; root.Name() != want {
		t.Errorf("root span %q, want %q", root.Name(), want)
	}
	got := map[string]string{}
	for _, kv := range root.Attributes() {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	if got["mapsentry.crash.signature"] != "s1-0123456789abcdef" || got["mapsentry.diagnosis"] != c.Diagnosis.Sentence ||
		got["mapsentry.map.variable"] != "main.ledger" || got["mapsentry.diagnosis.evidence_strength"] != "certain" {
		t.Errorf("root attributes %v", got)
	}
	// A map no variable names: where it was made is on the span.
	c.Diagnosis.Variable = &report.Variable{Source: report.SourceTypeOnly,
		AllocSite: &report.Site{Function: "main.newLedger", File: "/src/bank/ledger.go", Line: 18}}
	spans, _ = CrashSpans(c)
	alloc := ""
	for _, kv := range spans[0].Attributes() {
		if kv.Key == "mapsentry.map.alloc_site" {
			alloc = kv.Value.Emit()
		}
	}
	if alloc != "ledger.go:18 (main.newLedger)" {
		t.Errorf("mapsentry.map.alloc_site %q, want ledger.go:18 (main.newLedger)", alloc)
	}
	c.Diagnosis = nil
	if spans, _ := CrashSpans(c); spans[0].Name() != "map_concurrent_write" {
		t.Errorf("without a diagnosis the root span is %q, want the kind", spans[0].Name())
	}
}
