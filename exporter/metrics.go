package exporter

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/mapsentry/mapsentry/report"
)

// Metrics are the daemon's own metrics, recorded through the OpenTelemetry
// metrics SDK. Handler serves them as Prometheus text (for /metrics on the
// socket); extra readers passed to NewMetrics (e.g. a periodic reader with
// an OTLP metric exporter) push the same instruments elsewhere.
//
// All methods are safe for concurrent use, and a nil *Metrics records
// nothing, so components can take one optionally.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader

	crashes    metric.Int64Counter
	binaries   metric.Int64Gauge
	probes     metric.Int64Gauge
	eventsLost metric.Int64Counter
	freeze     metric.Float64Histogram
	capture    metric.Float64Histogram
	queueDepth metric.Int64Gauge
	exportedN  metric.Int64Counter
	failures   metric.Int64Counter
	dropped    metric.Int64Counter

	// Diagnosis and crash-loop instruments (metrics_signature.go).
	suppressed metric.Int64Counter
	deadline   metric.Int64Counter
	capErrors  metric.Int64Counter
	discErrors metric.Int64Counter
	sigs       *signatureLabels
}

// Instrument names. The Prometheus names are derived: dots become
// underscores, unit "s" adds _seconds, counters add _total (docs/export.md
// lists both).
const (
	metricCrashes    = "mapsentry.crashes"
	metricBinaries   = "mapsentry.binaries.watched"
	metricProbes     = "mapsentry.probes.attached"
	metricEventsLost = "mapsentry.events.lost"
	metricFreeze     = "mapsentry.freeze.duration"
	metricCapture    = "mapsentry.capture.duration"
	metricQueueDepth = "mapsentry.export.queue.depth"
	metricExported   = "mapsentry.export.exported"
	metricFailures   = "mapsentry.export.failures"
	metricDropped    = "mapsentry.export.dropped"
)

// durationBuckets (seconds) cover a freeze from a millisecond up to past
// the default 2 s freeze deadline.
func durationBuckets() []float64 {
	return []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5}
}

// NewMetrics creates the instruments. extra readers receive the same
// metrics as the Prometheus handler.
func NewMetrics(extra ...sdkmetric.Reader) (*Metrics, error) {
	m := newMeterProvider(extra)
	meter := m.provider.Meter(ScopeName)
	if err := m.createInstruments(meter); err != nil {
		return nil, fmt.Errorf("create metrics instruments: %w", err)
	}
	m.zeroGauges()
	return m, nil
}

// newMeterProvider owns where the metrics go: the manual reader behind the
// Prometheus handler, always, plus the extra readers, all under one
// resource (service.name mapsentry) so that every backend sees the same
// series. The instruments are created afterwards.
func newMeterProvider(extra []sdkmetric.Reader) *Metrics {
	reader := sdkmetric.NewManualReader()
	opts := []sdkmetric.Option{
		sdkmetric.WithReader(reader),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String(attrServiceName, "mapsentry"))),
	}
	for _, r := range extra {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	return &Metrics{provider: sdkmetric.NewMeterProvider(opts...), reader: reader}
}

// createInstruments creates every instrument on meter, in the order of the
// Metrics fields, stopping at the first error: a Metrics is whole or not
// at all.
func (m *Metrics) createInstruments(meter metric.Meter) error {
	if err := m.captureInstruments(meter); err != nil {
		return err
	}
	if err := m.exportInstruments(meter); err != nil {
		return err
	}
	return m.diagnosisInstruments(meter)
}

// captureInstruments owns what the daemon watches and captures: crashes,
// probed binaries and probes, lost BPF events, and how long a crashing
// process is frozen and snapshotted (histograms on durationBuckets).
func (m *Metrics) captureInstruments(meter metric.Meter) error {
	var err error
	if m.crashes, err = meter.Int64Counter(metricCrashes, metric.WithUnit("{crash}"),
		metric.WithDescription("Crashes captured, by fatal kind and executable base name.")); err != nil {
		return err
	}
	if m.binaries, err = meter.Int64Gauge(metricBinaries, metric.WithUnit("{binary}"),
		metric.WithDescription("Go binaries with crash probes attached.")); err != nil {
		return err
	}
	if m.probes, err = meter.Int64Gauge(metricProbes, metric.WithUnit("{probe}"),
		metric.WithDescription("Uprobes currently attached.")); err != nil {
		return err
	}
	if m.eventsLost, err = meter.Int64Counter(metricEventsLost, metric.WithUnit("{event}"),
		metric.WithDescription("BPF events lost (ring buffer full), by source.")); err != nil {
		return err
	}
	if m.freeze, err = meter.Float64Histogram(metricFreeze, metric.WithUnit("s"),
		metric.WithDescription("How long a crashing process was held frozen."),
		metric.WithExplicitBucketBoundaries(durationBuckets()...)); err != nil {
		return err
	}
	m.capture, err = meter.Float64Histogram(metricCapture, metric.WithUnit("s"),
		metric.WithDescription("How long the snapshot of a frozen process took."),
		metric.WithExplicitBucketBoundaries(durationBuckets()...))
	return err
}

// exportInstruments owns the OTLP trace export's health: the queue of
// stored crashes not yet exported, what was acknowledged, failed requests
// (retried) and crashes given up on.
func (m *Metrics) exportInstruments(meter metric.Meter) error {
	var err error
	if m.queueDepth, err = meter.Int64Gauge(metricQueueDepth, metric.WithUnit("{crash}"),
		metric.WithDescription("Crashes stored and not yet exported.")); err != nil {
		return err
	}
	if m.exportedN, err = meter.Int64Counter(metricExported, metric.WithUnit("{crash}"),
		metric.WithDescription("Crashes exported over OTLP and acknowledged.")); err != nil {
		return err
	}
	if m.failures, err = meter.Int64Counter(metricFailures, metric.WithUnit("{request}"),
		metric.WithDescription("Failed OTLP export requests (each is retried).")); err != nil {
		return err
	}
	m.dropped, err = meter.Int64Counter(metricDropped, metric.WithUnit("{crash}"),
		metric.WithDescription("Crashes given up on without export, by reason."))
	return err
}

// zeroGauges starts every gauge at zero so that /metrics shows them before
// the first update.
func (m *Metrics) zeroGauges() {
	ctx := context.Background()
	m.binaries.Record(ctx, 0)
	m.probes.Record(ctx, 0)
	m.queueDepth.Record(ctx, 0)
}

// Shutdown flushes and stops every reader.
func (m *Metrics) Shutdown(ctx context.Context) error {
	if m == nil {
		return nil
	}
	if err := m.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down metrics: %w", err)
	}
	return nil
}

// CrashCaptured counts c and records its freeze and capture durations.
func (m *Metrics) CrashCaptured(c report.Crash) {
	if m == nil {
		return
	}
	ctx := context.Background()
	exe := "unknown"
	if c.Process.Exe != "" {
		exe = filepath.Base(c.Process.Exe) // base name keeps label cardinality to the binaries watched
	}
	m.crashes.Add(ctx, 1, metric.WithAttributes(
		attribute.String("kind", spanName(c.Fatal.Kind)),
		attribute.String("exe", exe),
		attribute.String("signature", m.sigs.label(report.SignatureOf(&c)))))
	m.captureOutcome(ctx, c)
	if c.Freeze.FrozenNS > 0 {
		m.freeze.Record(ctx, time.Duration(c.Freeze.FrozenNS).Seconds())
	}
	if c.Capture.DurationNS > 0 {
		m.capture.Record(ctx, time.Duration(c.Capture.DurationNS).Seconds())
	}
}

// SetBinariesWatched records how many Go binaries have probes attached.
func (m *Metrics) SetBinariesWatched(n int) {
	if m != nil {
		m.binaries.Record(context.Background(), int64(n))
	}
}

// SetProbesAttached records how many uprobes are attached.
func (m *Metrics) SetProbesAttached(n int) {
	if m != nil {
		m.probes.Record(context.Background(), int64(n))
	}
}

// AddEventsLost counts n BPF events lost by source (e.g. "crash", "exec",
// "mapops").
func (m *Metrics) AddEventsLost(source string, n uint64) {
	if m != nil && n > 0 {
		m.eventsLost.Add(context.Background(), int64(n), metric.WithAttributes(attribute.String("source", source)))
	}
}

func (m *Metrics) exportQueueDepth(n int) {
	if m != nil {
		m.queueDepth.Record(context.Background(), int64(n))
	}
}

func (m *Metrics) exported() {
	if m != nil {
		m.exportedN.Add(context.Background(), 1)
	}
}

func (m *Metrics) exportFailed() {
	if m != nil {
		m.failures.Add(context.Background(), 1)
	}
}

func (m *Metrics) exportDropped(reason string) {
	if m != nil {
		m.dropped.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
	}
}
