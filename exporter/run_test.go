package exporter

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mapsentry/mapsentry/report"
)

// fakeSpans is a SpanExporter whose failures the test controls.
type fakeSpans struct {
	mu     sync.Mutex
	fail   func(spans []sdktrace.ReadOnlySpan) error
	calls  int
	traces map[string]int // trace id -> root spans received
}

func (f *fakeSpans) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		if err := f.fail(spans); err != nil {
			return err
		}
	}
	if f.traces == nil {
		f.traces = map[string]int{}
	}
	for _, s := range spans {
		if !s.Parent().IsValid() {
			f.traces[s.SpanContext().TraceID().String()]++
		}
	}
	return nil
}

func (f *fakeSpans) Shutdown(context.Context) error { return nil }

func (f *fakeSpans) setFail(fn func([]sdktrace.ReadOnlySpan) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

func testConfig() Config {
	c := DefaultConfig()
	c.Queue.RetryInitial = 10 * time.Millisecond
	c.Queue.RetryMax = 40 * time.Millisecond
	c.Queue.Poll = 20 * time.Millisecond
	c.Queue.BatchSize = 4
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runExporter(t *testing.T, e *Exporter) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func TestRunRetriesUntilAcknowledged(t *testing.T) {
	now := time.Now()
	q := newMemQueue()
	for i := range 10 {
		q.Add(sampleCrash(crashID(i), now))
	}
	spans := &fakeSpans{}
	spans.setFail(func([]sdktrace.ReadOnlySpan) error {
		return status.Error(codes.Unavailable, "connection refused")
	})
	m, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	e := newExporter(testConfig(), q, spans, m, slog.New(slog.DiscardHandler))
	stop := runExporter(t, e)
	defer stop()

	waitFor(t, "three failed attempts", func() bool {
		spans.mu.Lock()
		defer spans.mu.Unlock()
		return spans.calls >= 3
	})
	if n, acked, _ := q.snapshot(); n != 10 || len(acked) != 0 {
		t.Fatalf("while failing: %d pending, %d acked", n, len(acked))
	}
	spans.setFail(nil)
	e.Notify()
	waitFor(t, "all acknowledged", func() bool { n, _, _ := q.snapshot(); return n == 0 })
	_, acked, dropped := q.snapshot()
	for i := range 10 {
		if acked[crashID(i)] != 1 {
			t.Errorf("crash %d acknowledged %d times", i, acked[crashID(i)])
		}
	}
	if len(dropped) != 0 {
		t.Errorf("dropped %v", dropped)
	}
	fams := scrape(t, m)
	if v := counterValue(fams, "mapsentry_export_failures_total", nil); v < 3 {
		t.Errorf("export failures = %v, want >= 3", v)
	}
	if v := counterValue(fams, "mapsentry_export_exported_total", nil); v != 10 {
		t.Errorf("exported = %v, want 10", v)
	}
}

func TestRunBoundsQueue(t *testing.T) {
	now := time.Now()
	old := sampleCrash(crashID(0), now.Add(-48*time.Hour))
	invalid := report.Crash{ID: crashID(1)} // no time at all
	q := newMemQueue(old, invalid)
	for i := 2; i < 8; i++ {
		q.Add(sampleCrash(crashID(i), now))
	}
	cfg := testConfig()
	cfg.Queue.MaxAge = 24 * time.Hour
	cfg.Queue.MaxPending = 5 // 8 queued: the 3 oldest go
	spans := &fakeSpans{}
	m, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	e := newExporter(cfg, q, spans, m, slog.New(slog.DiscardHandler))
	stop := runExporter(t, e)
	defer stop()
	waitFor(t, "queue empty", func() bool { n, _, _ := q.snapshot(); return n == 0 })
	_, acked, dropped := q.snapshot()
	if len(acked) != 5 || len(dropped) != 3 {
		t.Fatalf("acked %d dropped %v", len(acked), dropped)
	}
	for _, id := range []string{crashID(0), crashID(1), crashID(2)} {
		if dropped[id] != DropQueueFull {
			t.Errorf("crash %s dropped for %q, want %q", id, dropped[id], DropQueueFull)
		}
	}
	fams := scrape(t, m)
	if v := counterValue(fams, "mapsentry_export_dropped_total", map[string]string{"reason": DropQueueFull}); v != 3 {
		t.Errorf("dropped{queue_full} = %v", v)
	}

	// Age and validity are checked on what is left.
	q2 := newMemQueue(old, invalid, sampleCrash(crashID(9), now))
	e2 := newExporter(cfg, q2, &fakeSpans{}, nil, slog.New(slog.DiscardHandler))
	stop2 := runExporter(t, e2)
	defer stop2()
	waitFor(t, "second queue empty", func() bool { n, _, _ := q2.snapshot(); return n == 0 })
	_, acked, dropped = q2.snapshot()
	if dropped[crashID(0)] != DropMaxAge || dropped[crashID(1)] != DropInvalid || acked[crashID(9)] != 1 {
		t.Errorf("acked %v dropped %v", acked, dropped)
	}
}

func TestRunIsolatesRejectedCrash(t *testing.T) {
	now := time.Now()
	q := newMemQueue()
	for i := range 3 {
		q.Add(sampleCrash(crashID(i), now))
	}
	poison := TraceID(crashID(1))
	spans := &fakeSpans{}
	spans.setFail(func(ss []sdktrace.ReadOnlySpan) error {
		for _, s := range ss {
			if s.SpanContext().TraceID() == poison {
				return status.Error(codes.InvalidArgument, "bad span")
			}
		}
		return nil
	})
	e := newExporter(testConfig(), q, spans, nil, slog.New(slog.DiscardHandler))
	stop := runExporter(t, e)
	defer stop()
	waitFor(t, "queue empty", func() bool { n, _, _ := q.snapshot(); return n == 0 })
	_, acked, dropped := q.snapshot()
	if acked[crashID(0)] != 1 || acked[crashID(2)] != 1 || dropped[crashID(1)] != DropRejected {
		t.Errorf("acked %v dropped %v", acked, dropped)
	}
}

func TestRunSurvivesQueueErrors(t *testing.T) {
	q := newMemQueue(sampleCrash(crashID(0), time.Now()))
	q.failLen = errors.New("store closed")
	e := newExporter(testConfig(), q, &fakeSpans{}, nil, slog.New(slog.DiscardHandler))
	stop := runExporter(t, e)
	defer stop()
	time.Sleep(50 * time.Millisecond)
	q.mu.Lock()
	q.failLen = nil
	q.mu.Unlock()
	waitFor(t, "queue empty after the store recovered", func() bool { n, _, _ := q.snapshot(); return n == 0 })
}

func TestConfigValidate(t *testing.T) {
	bad := Config{Protocol: "udp", Insecure: true, TLS: TLSConfig{CAFile: "/ca.pem", CertFile: "/c.pem"}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"export.otlp.protocol", "insecure", "key_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config invalid: %v", err)
	}
	if _, err := New(context.Background(), Config{Protocol: ProtocolHTTP, Insecure: true}, newMemQueue(), nil, nil); err != nil {
		t.Errorf("New(http): %v", err)
	}
}
