package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/mapsentry/mapsentry/exporter"
	"github.com/mapsentry/mapsentry/internal/jaegertest"
	"github.com/mapsentry/mapsentry/report"
)

// exportEnv points a test daemon at a Jaeger, with fast retries.
func exportEnv(j *jaegertest.Jaeger) []string {
	return []string{
		"MAPSENTRY_EXPORT_ENABLED=true",
		"MAPSENTRY_EXPORT_OTLP_ENDPOINT=" + j.OTLPGRPC,
		"MAPSENTRY_EXPORT_QUEUE_RETRY_INITIAL=200ms",
		"MAPSENTRY_EXPORT_QUEUE_RETRY_MAX=1s",
		"MAPSENTRY_EXPORT_QUEUE_POLL=500ms",
	}
}

// crashVictim runs one victim to its crash under d and returns its report.
func crashVictim(t *testing.T, d *daemon, path, mode string) report.Crash {
	t.Helper()
	vic := startVictim(t, path, mode, "wait")
	d.waitAttached(t, vic.pid)
	vic.release()
	if code := vic.wait(t, 60*time.Second); code != 2 {
		t.Fatalf("victim exit %d, want 2", code)
	}
	return d.crashOf(t, vic.pid)
}

// waitTrace polls Jaeger until the trace has want spans.
func waitTrace(t *testing.T, j *jaegertest.Jaeger, id string, want int) jaegertest.Trace {
	t.Helper()
	var tr jaegertest.Trace
	waitFor(t, 30*time.Second, "trace "+id+" in Jaeger", func() bool {
		got, ok := j.Trace(t, id)
		tr = got
		return ok && len(got.Spans) == want
	})
	return tr
}

// jaegerValue is how Jaeger's JSON API shows an OTel attribute value.
func sameValue(kv attribute.KeyValue, got any) bool {
	switch kv.Value.Type() {
	case attribute.STRING:
		return got == kv.Value.AsString()
	case attribute.BOOL:
		return got == kv.Value.AsBool()
	case attribute.INT64:
		f, ok := got.(float64)
		return ok && int64(f) == kv.Value.AsInt64()
	case attribute.FLOAT64:
		return got == kv.Value.AsFloat64()
	default: // slices arrive as JSON text; presence is enough here
		return got != nil
	}
}

// TestCrashTraceInJaeger: a real victim crashes under a daemon that exports
// to a real Jaeger v2; the trace Jaeger serves matches the stored report.
func TestCrashTraceInJaeger(t *testing.T) {
	startDaemonCheck(t)
	j := jaegertest.Start(t)
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "", exportEnv(j)...)
	cr := crashVictim(t, d, shared.victim(t, variants[0]), "rw")
	stored, err := d.c.Crash(context.Background(), cr.ID)
	if err != nil {
		t.Fatal(err)
	}

	// What the stored report maps to, span by span (ids are derived from
	// the crash id, so Jaeger's spans can be matched one to one).
	want, err := exporter.CrashSpans(*stored)
	if err != nil {
		t.Fatal(err)
	}
	traceID := exporter.TraceID(cr.ID).String()
	tr := waitTrace(t, j, traceID, len(want))

	got := map[string]jaegertest.Span{}
	for _, s := range tr.Spans {
		got[s.SpanID] = s
	}
	for _, w := range want {
		s, ok := got[w.SpanContext().SpanID().String()]
		if !ok {
			t.Errorf("span %q missing from Jaeger", w.Name())
			continue
		}
		if s.OperationName != w.Name() {
			t.Errorf("span %s named %q in Jaeger, %q in the report's mapping", s.SpanID, s.OperationName, w.Name())
		}
		tags := jaegertest.Map(s.Tags)
		for _, kv := range w.Attributes() {
			if !sameValue(kv, tags[string(kv.Key)]) {
				t.Errorf("span %q attribute %s = %v in Jaeger, %v in the report", w.Name(), kv.Key, tags[string(kv.Key)], kv.Value.Emit())
			}
		}
		if len(s.Logs) != len(w.Events()) {
			t.Errorf("span %q has %d events in Jaeger, %d from the report", w.Name(), len(s.Logs), len(w.Events()))
		}
	}

	// Spot checks against the report itself, not only its mapping.
	var root jaegertest.Span
	for _, s := range tr.Spans {
		if len(s.References) == 0 {
			root = s
		}
	}
	rt := jaegertest.Map(root.Tags)
	if rt["exception.message"] != stored.Fatal.Message {
		t.Errorf("exception.message %v, report %q", rt["exception.message"], stored.Fatal.Message)
	}
	partners := 0
	for _, l := range root.Logs {
		if jaegertest.Map(l.Fields)["event"] == "partner goroutine" {
			partners++
		}
	}
	if partners != len(stored.Partners) || len(stored.Partners) == 0 {
		t.Errorf("%d partner events in Jaeger, %d partners in the report (want some)", partners, len(stored.Partners))
	}
	proc := tr.Processes[root.ProcessID]
	pt := jaegertest.Map(proc.Tags)
	if proc.ServiceName != exporter.ServiceName(stored.Process) || fmt.Sprint(pt["process.pid"]) != fmt.Sprint(stored.Process.PID) ||
		pt["process.runtime.version"] != stored.Process.GoVersion {
		t.Errorf("resource: service %q, tags %v; report process %+v", proc.ServiceName, pt, stored.Process)
	}
	names := map[string]bool{}
	for _, s := range tr.Spans {
		names[s.OperationName] = true
	}
	for _, n := range []string{"freeze", "capture", "map decode", "goroutine dump", "resume"} {
		if !names[n] {
			t.Errorf("no %q span in the trace (spans: %v)", n, names)
		}
	}
	t.Logf("trace %s/trace/%s: %d spans", j.QueryURL, traceID, len(tr.Spans))
}

// TestExportSurvivesJaegerOutageAndRestart: Jaeger down, 20 crashes, the
// daemon restarted once while Jaeger is still down, then Jaeger up: all 20
// traces arrive, each exactly once.
func TestExportSurvivesJaegerOutageAndRestart(t *testing.T) {
	startDaemonCheck(t)
	j := jaegertest.New(t) // ports reserved, not started
	state := filepath.Join(t.TempDir(), "state")
	scope := filepath.Join(shared.dir, "bin")
	path := shared.victim(t, variants[0])

	d := startDaemon(t, scope, state, exportEnv(j)...)
	var ids []string
	for i := 0; i < 20; i++ {
		if i == 10 {
			d.stop() // restart while Jaeger is still down
			d = startDaemon(t, scope, state, exportEnv(j)...)
		}
		ids = append(ids, crashVictim(t, d, path, "writes").ID)
	}
	st, err := d.c.Status(context.Background())
	if err != nil || st.Crashes != 20 {
		t.Fatalf("status after 20 crashes: %+v, %v", st, err)
	}

	j.Start(t)
	service := "" // every crash of this binary shares its service name
	if c, err := d.c.Crash(context.Background(), ids[0]); err == nil {
		service = exporter.ServiceName(c.Process)
	}
	var traces []jaegertest.Trace
	waitFor(t, 60*time.Second, "20 traces in Jaeger", func() bool {
		traces = j.FindTraces(t, service)
		return len(traces) >= 20
	})
	time.Sleep(2 * time.Second) // anything duplicated would arrive by now
	traces = j.FindTraces(t, service)
	seen := map[string]int{}
	for _, tr := range traces {
		seen[tr.TraceID]++
		roots := 0
		for _, s := range tr.Spans {
			if len(s.References) == 0 {
				roots++
			}
		}
		if roots != 1 {
			t.Errorf("trace %s has %d root spans: exported more than once", tr.TraceID, roots)
		}
	}
	for _, id := range ids {
		if n := seen[exporter.TraceID(id).String()]; n != 1 {
			t.Errorf("crash %s: %d traces, want exactly 1", id, n)
		}
	}
	if len(traces) != 20 {
		t.Errorf("%d traces for %s, want 20", len(traces), service)
	}
}
