package exporter

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/internal/jaegertest"
	"github.com/mapsentry/mapsentry/report"
)

// uniqueUnit gives each test its own Jaeger service name.
func uniqueUnit(prefix string) string {
	return fmt.Sprintf("%s-%d-%d.service", prefix, os.Getpid(), time.Now().UnixNano()%1_000_000)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// TestJaegerEndToEnd exports a realistic crash to a real Jaeger v2 over
// OTLP gRPC, twice, and reads it back through Jaeger's query API: one
// trace, with the spans, attributes and events of the report.
func TestJaegerEndToEnd(t *testing.T) {
	j := jaegertest.Start(t)
	ctx := context.Background()

	c := withDetails(sampleCrash(report.NewID(time.Now()), time.Now().Add(-time.Second).Truncate(time.Microsecond)))
	c.Process.Unit = uniqueUnit("orders-api")
	service := ServiceName(c.Process)

	cfg := DefaultConfig()
	cfg.Endpoint = j.OTLPGRPC
	e, err := New(ctx, cfg, newMemQueue(), nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(ctx)
	for i := range 2 { // the second export must not duplicate anything
		if err := e.Export(ctx, c); err != nil {
			t.Fatalf("export %d: %v", i+1, err)
		}
	}

	traces := j.WaitTraces(t, service, 1, 4, 30*time.Second)
	traceID := TraceID(c.ID).String()
	if traces[0].TraceID != traceID {
		t.Fatalf("trace id %s, want %s derived from crash id %s", traces[0].TraceID, traceID, c.ID)
	}
	// Give Jaeger's batch processor time to store the second copy, then
	// check again: the trace must still be one trace with four spans.
	time.Sleep(time.Second)
	j.WaitTraces(t, service, 1, 4, 5*time.Second)

	tr, ok := j.Trace(t, traceID)
	if !ok {
		t.Fatalf("GET /api/traces/%s: not found", traceID)
	}
	byName := map[string]jaegertest.Span{}
	for _, s := range tr.Spans {
		byName[s.OperationName] = s
	}
	root, ok := byName["map_concurrent_write"]
	if !ok {
		t.Fatalf("no root span map_concurrent_write in %v", byName)
	}
	if len(root.References) != 0 {
		t.Errorf("root span has references %v", root.References)
	}
	if root.StartTime != c.Fatal.Events[0].WallTime.UnixMicro() || root.Duration != c.Freeze.FrozenNS/1000 {
		t.Errorf("root %d+%dµs, want %d+%dµs", root.StartTime, root.Duration, c.Fatal.Events[0].WallTime.UnixMicro(), c.Freeze.FrozenNS/1000)
	}
	tags := jaegertest.Map(root.Tags)
	for k, want := range map[string]any{
		"exception.type":                  "fatal error",
		"exception.message":               "concurrent map writes",
		"mapsentry.fatal.kind":            "map_concurrent_write",
		"code.function":                   "main.(*Store).Put",
		"code.filepath":                   "/src/orders/store.go",
		"code.lineno":                     float64(41),
		"thread.id":                       float64(4250),
		"mapsentry.fatal.caller_function": "internal/runtime/maps.(*Map).putSlowPath",
		"mapsentry.map.addr":              "0xc000112000",
		"mapsentry.map.go_type":           "map[string]*main.Session",
		"mapsentry.map.layout":            "swiss",
		"mapsentry.map.header.used":       float64(1234),
		"mapsentry.map.entries_found":     float64(1233),
		"mapsentry.map.anomalies":         float64(2),
		"mapsentry.goroutines.count":      float64(3),
		"mapsentry.goroutine.id":          float64(34),
		"mapsentry.crash.id":              c.ID,
		"mapsentry.freeze.frozen_ns":      float64(c.Freeze.FrozenNS),
		"mapsentry.process.exit_status":   float64(2),
		"error":                           true,
		"otel.status_code":                "ERROR",
		"otel.status_description":         "concurrent map writes",
	} {
		if tags[k] != want {
			t.Errorf("root tag %s = %#v, want %#v", k, tags[k], want)
		}
	}
	if st, _ := tags["exception.stacktrace"].(string); !strings.HasPrefix(st, "goroutine 34 [running]:\n") || !strings.Contains(st, "main.(*Store).Put(...)\n\t/src/orders/store.go:41") {
		t.Errorf("exception.stacktrace = %q", st)
	}
	logs := map[string][]jaegertest.Log{}
	for _, l := range root.Logs {
		name, _ := jaegertest.Map(l.Fields)["event"].(string)
		logs[name] = append(logs[name], l)
	}
	if len(logs["fatal"]) != len(c.Fatal.Events) || len(logs["partner goroutine"]) != 1 || len(logs["map anomaly"]) != 2 {
		t.Errorf("root logs: %d fatal, %d partner, %d anomaly; want %d, 1, 2",
			len(logs["fatal"]), len(logs["partner goroutine"]), len(logs["map anomaly"]), len(c.Fatal.Events))
	}
	for i, l := range logs["fatal"] {
		f := jaegertest.Map(l.Fields)
		ev := c.Fatal.Events[i]
		if f["thread.id"] != float64(ev.TID) || l.Timestamp != ev.WallTime.UnixMicro() {
			t.Errorf("fatal log %d = %v at %d, want thread %d at %d", i, f, l.Timestamp, ev.TID, ev.WallTime.UnixMicro())
		}
	}
	if p := logs["partner goroutine"]; len(p) == 1 {
		f := jaegertest.Map(p[0].Fields)
		want := c.Partners[0]
		if f["mapsentry.goroutine.id"] != float64(want.Goid) || f["code.function"] != want.Function || f["mapsentry.partner.evidence"] != want.Evidence {
			t.Errorf("partner log %v, want %+v", f, want)
		}
		if p[0].Timestamp != c.Fatal.Events[0].WallTime.Add(-15*time.Microsecond).UnixMicro() {
			t.Errorf("partner log at %d, want 15µs before the first fatal event", p[0].Timestamp)
		}
	}
	for i, l := range logs["map anomaly"] {
		f := jaegertest.Map(l.Fields)
		want := c.Map.Anomalies[i]
		if f["mapsentry.anomaly.code"] != want.Code || f["mapsentry.anomaly.detail"] != want.Detail {
			t.Errorf("anomaly log %d = %v, want %+v", i, f, want)
		}
	}
	proc := tr.Processes[root.ProcessID]
	if proc.ServiceName != service {
		t.Errorf("service %q, want %q", proc.ServiceName, service)
	}
	ptags := jaegertest.Map(proc.Tags)
	for k, want := range map[string]any{
		"process.pid":             float64(c.Process.PID),
		"process.executable.path": c.Process.Exe,
		"process.command_line":    "/usr/local/bin/orders-api -listen 127.0.0.1:8080",
		"process.runtime.name":    "go",
		"process.runtime.version": c.Process.GoVersion,
		"host.name":               c.Host,
		"service.instance.id":     c.Host + "/4242/" + strconv.FormatUint(c.Process.StartTime, 10),
	} {
		if ptags[k] != want {
			t.Errorf("process tag %s = %#v, want %#v", k, ptags[k], want)
		}
	}
	for name, want := range map[string][2]int64{ // µs offset from root start, duration
		"freeze":  {0, c.Freeze.AllThreadsStoppedNS / 1000},
		"capture": {c.Freeze.AllThreadsStoppedNS / 1000, (c.Capture.DurationNS - c.Freeze.AllThreadsStoppedNS) / 1000},
		"resume":  {c.Capture.DurationNS / 1000, (c.Freeze.FrozenNS - c.Capture.DurationNS) / 1000},
	} {
		s, ok := byName[name]
		if !ok {
			t.Errorf("no %s span", name)
			continue
		}
		if len(s.References) != 1 || s.References[0].RefType != "CHILD_OF" || s.References[0].SpanID != root.SpanID {
			t.Errorf("%s span references %v, want CHILD_OF root", name, s.References)
		}
		if s.StartTime-root.StartTime != want[0] || s.Duration != want[1] {
			t.Errorf("%s span +%d %dµs, want +%d %dµs", name, s.StartTime-root.StartTime, s.Duration, want[0], want[1])
		}
	}
}

// TestJaegerOTLPHTTP sends a crash over OTLP/HTTP (protobuf).
func TestJaegerOTLPHTTP(t *testing.T) {
	j := jaegertest.Start(t)
	ctx := context.Background()
	c := sampleCrash(report.NewID(time.Now()), time.Now().Add(-time.Second))
	c.Process.Unit = uniqueUnit("billing-http")
	cfg := Config{Protocol: ProtocolHTTP, Endpoint: j.OTLPHTTP, Insecure: true}
	e, err := New(ctx, cfg, newMemQueue(), nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(ctx)
	if err := e.Export(ctx, c); err != nil {
		t.Fatal(err)
	}
	got := j.WaitTraces(t, ServiceName(c.Process), 1, 4, 30*time.Second)
	if got[0].TraceID != TraceID(c.ID).String() {
		t.Errorf("trace id %s, want %s", got[0].TraceID, TraceID(c.ID))
	}
}

// TestJaegerOutage: Jaeger is down while 20 crashes are queued; the
// exporter fails, is restarted (a daemon restart: a new Exporter on the
// same durable queue) while Jaeger is still down; then Jaeger comes up and
// all 20 traces arrive, each exactly once.
func TestJaegerOutage(t *testing.T) {
	j := jaegertest.New(t) // ports reserved, nothing listening yet
	unit := uniqueUnit("outage")
	q := newMemQueue()
	base := time.Now().Add(-time.Minute)
	var ids []string
	for i := range 20 {
		c := sampleCrash(report.NewID(base.Add(time.Duration(i)*time.Second)), base.Add(time.Duration(i)*time.Second))
		c.Process.Unit = unit
		c.Process.PID = 5000 + i
		q.Add(c)
		ids = append(ids, c.ID)
	}
	cfg := DefaultConfig()
	cfg.Endpoint = j.OTLPGRPC
	cfg.Timeout = 2 * time.Second
	cfg.Queue.RetryInitial = 100 * time.Millisecond
	cfg.Queue.RetryMax = time.Second
	cfg.Queue.BatchSize = 8

	run := func(m *Metrics) (*Exporter, func()) {
		e, err := New(context.Background(), cfg, q, m, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		return e, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}

	m1, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	_, stop1 := run(m1)
	time.Sleep(time.Second) // down for a while: several retries
	waitFor(t, "export failures while jaeger is down", func() bool {
		return counterValue(scrape(t, m1), "mapsentry_export_failures_total", nil) >= 2
	})
	stop1()
	if n, acked, _ := q.snapshot(); n != 20 || len(acked) != 0 {
		t.Fatalf("after first run: %d pending, %d acked; want 20, 0", n, len(acked))
	}

	m2, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	e2, stop2 := run(m2) // the restarted daemon's exporter
	defer stop2()
	time.Sleep(time.Second)
	waitFor(t, "export failures after restart", func() bool {
		return counterValue(scrape(t, m2), "mapsentry_export_failures_total", nil) >= 1
	})
	if depth := counterValue(scrape(t, m2), "mapsentry_export_queue_depth", nil); depth != 20 {
		t.Errorf("queue depth while down = %v, want 20", depth)
	}

	j.Start(t)
	e2.Notify()
	deadline := time.Now().Add(90 * time.Second)
	for n, _, _ := q.snapshot(); n > 0; n, _, _ = q.snapshot() {
		if time.Now().After(deadline) {
			t.Fatalf("%d crashes still queued 90s after jaeger came up", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, acked, dropped := q.snapshot()
	if len(dropped) != 0 {
		t.Errorf("dropped: %v", dropped)
	}
	for _, id := range ids {
		if acked[id] != 1 {
			t.Errorf("crash %s acknowledged %d times, want 1", id, acked[id])
		}
	}

	traces := j.WaitTraces(t, ServiceName(report.Process{Unit: unit}), 20, 4, 30*time.Second)
	got := map[string]int{}
	for _, tr := range traces {
		got[tr.TraceID]++
	}
	for _, id := range ids {
		if got[TraceID(id).String()] != 1 {
			t.Errorf("crash %s: %d traces in jaeger, want 1", id, got[TraceID(id).String()])
		}
	}
	if v := counterValue(scrape(t, m2), "mapsentry_export_exported_total", nil); v != 20 {
		t.Errorf("exported_total = %v, want 20", v)
	}
}
