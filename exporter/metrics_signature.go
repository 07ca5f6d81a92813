package exporter

import (
	"context"
	"path/filepath"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/mapsentry/mapsentry/report"
)

// More instrument names (docs/export.md lists their Prometheus names).
const (
	metricSuppressed = "mapsentry.crashes.suppressed"
	metricDeadline   = "mapsentry.capture.deadline_hits"
	metricCapErrors  = "mapsentry.capture.errors"
	metricDiscErrors = "mapsentry.discovery.errors"
)

// MaxSignatureLabels bounds the signature label's values: the first this
// many distinct signatures since the daemon started keep their own value,
// later ones are counted as "other". Prometheus series stay bounded on a
// host whatever crashes.
const MaxSignatureLabels = 50

// OtherSignature is the label value of signatures beyond the bound.
const OtherSignature = "other"

type signatureLabels struct {
	mu   sync.Mutex
	seen map[string]bool
	max  int
}

func (s *signatureLabels) label(sig string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[sig] {
		return sig
	}
	if len(s.seen) >= s.max {
		return OtherSignature
	}
	s.seen[sig] = true
	return sig
}

func (m *Metrics) diagnosisInstruments(meter metric.Meter) error {
	m.sigs = &signatureLabels{seen: map[string]bool{}, max: MaxSignatureLabels}
	var err error
	if m.suppressed, err = meter.Int64Counter(metricSuppressed, metric.WithUnit("{crash}"),
		metric.WithDescription("Crashes counted without a full capture by the crash-loop budget, by kind, executable and signature.")); err != nil {
		return err
	}
	if m.deadline, err = meter.Int64Counter(metricDeadline, metric.WithUnit("{crash}"),
		metric.WithDescription("Captures cut short by the freeze deadline (freeze.max).")); err != nil {
		return err
	}
	if m.capErrors, err = meter.Int64Counter(metricCapErrors, metric.WithUnit("{crash}"),
		metric.WithDescription("Captures that recorded at least one error, by kind.")); err != nil {
		return err
	}
	if m.discErrors, err = meter.Int64Counter(metricDiscErrors, metric.WithUnit("{error}"),
		metric.WithDescription("Discovery and probe-attach failures, by reason.")); err != nil {
		return err
	}
	// Counters the alert rules watch start at zero, so that /metrics shows
	// them (and rate() works) before the first event.
	ctx := context.Background()
	m.deadline.Add(ctx, 0)
	m.capErrors.Add(ctx, 0, metric.WithAttributes(attribute.String("kind", string(report.KindOtherFatal))))
	m.discErrors.Add(ctx, 0, metric.WithAttributes(attribute.String("reason", "none")))
	return nil
}

func (m *Metrics) captureOutcome(ctx context.Context, c report.Crash) {
	if c.Freeze.DeadlineHit {
		m.deadline.Add(ctx, 1)
	}
	if len(c.Capture.Errors) > 0 {
		m.capErrors.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", spanName(c.Fatal.Kind))))
	}
}

// CrashSuppressed counts a crash the crash-loop budget did not capture in
// full. signature is the loop's last known signature ("" when none yet).
func (m *Metrics) CrashSuppressed(kind report.Kind, exe, signature string) {
	if m == nil {
		return
	}
	if exe == "" {
		exe = "unknown"
	}
	if signature == "" {
		signature = "unknown"
	} else {
		signature = m.sigs.label(signature)
	}
	m.suppressed.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("kind", spanName(kind)),
		attribute.String("exe", filepath.Base(exe)),
		attribute.String("signature", signature)))
}

// AddDiscoveryErrors counts n discovery or probe-attach failures.
func (m *Metrics) AddDiscoveryErrors(reason string, n uint64) {
	if m != nil && n > 0 {
		m.discErrors.Add(context.Background(), int64(n), metric.WithAttributes(attribute.String("reason", reason)))
	}
}
