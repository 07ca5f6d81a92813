package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mapsentry/mapsentry/internal/retry"
	"github.com/mapsentry/mapsentry/report"
)

// Exporter drains a Queue into an OTLP receiver. Create it with New, start
// Run once, and call Notify after committing a crash to the queue.
type Exporter struct {
	cfg     Config
	queue   Queue
	spans   sdktrace.SpanExporter
	metrics *Metrics
	log     *slog.Logger
	wake    chan struct{}
	now     func() time.Time
}

// New returns an Exporter for cfg (defaults filled in) reading q. metrics
// may be nil. The OTLP connection is made lazily; New fails only on a bad
// configuration.
func New(ctx context.Context, cfg Config, q Queue, metrics *Metrics, log *slog.Logger) (*Exporter, error) {
	cfg.setDefaults()
	spans, err := newSpanExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return newExporter(cfg, q, spans, metrics, log), nil
}

func newExporter(cfg Config, q Queue, spans sdktrace.SpanExporter, metrics *Metrics, log *slog.Logger) *Exporter {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	return &Exporter{
		cfg:     cfg,
		queue:   q,
		spans:   spans,
		metrics: metrics,
		log:     log.With("component", "exporter", "endpoint", cfg.Endpoint, "protocol", cfg.Protocol),
		wake:    make(chan struct{}, 1),
		now:     time.Now,
	}
}

// Notify wakes Run to look at the queue now, e.g. right after a crash was
// committed. It never blocks. While Run is backing off after a failure it
// waits the back-off out first, so a burst of crashes cannot hammer a
// receiver that is down.
func (e *Exporter) Notify() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run exports queued crashes until ctx ends, retrying failed exports with
// exponential back-off (export.otlp.queue.retry_initial doubling up to
// retry_max, with jitter). It returns nil when ctx ends, after closing the
// OTLP client; an error only if the queue itself keeps failing is not
// fatal either: it is logged and retried like an export failure.
func (e *Exporter) Run(ctx context.Context) error {
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := e.spans.Shutdown(sctx); err != nil {
			e.log.Warn("close otlp exporter", "error", err)
		}
	}()
	var backoff time.Duration
	for {
		more, err := e.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := e.cfg.Queue.Poll
		switch {
		case err != nil:
			backoff = retry.Backoff(backoff, e.cfg.Queue.RetryInitial, e.cfg.Queue.RetryMax)
			wait = backoff
			e.log.Warn("export failed, will retry", "error", err, "retry_in", wait.Round(time.Millisecond))
		case more:
			backoff = 0
			continue
		default:
			if backoff > 0 {
				e.log.Info("export recovered")
			}
			backoff = 0
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-e.wakeUnlessBackingOff(backoff):
			timer.Stop()
		}
	}
}

func (e *Exporter) wakeUnlessBackingOff(backoff time.Duration) <-chan struct{} {
	if backoff > 0 {
		return nil // a nil channel never fires
	}
	return e.wake
}

// drain applies the queue bounds and exports one batch. more reports that a
// full batch went out and more may be waiting.
func (e *Exporter) drain(ctx context.Context) (more bool, err error) {
	q := e.cfg.Queue
	n, err := e.queue.Len(ctx)
	if err != nil {
		return false, fmt.Errorf("read export queue length: %w", err)
	}
	if q.MaxPending > 0 && n > q.MaxPending {
		over, err := e.queue.Pending(ctx, n-q.MaxPending)
		if err != nil {
			return false, fmt.Errorf("read export queue: %w", err)
		}
		for _, c := range over {
			if err := e.drop(ctx, c.ID, DropQueueFull); err != nil {
				return false, err
			}
			n--
		}
	}
	e.metrics.exportQueueDepth(n)

	batch, err := e.queue.Pending(ctx, q.BatchSize)
	if err != nil {
		return false, fmt.Errorf("read export queue: %w", err)
	}
	if len(batch) == 0 {
		return false, nil
	}
	var ready []report.Crash
	var spans []sdktrace.ReadOnlySpan
	for _, c := range batch {
		if q.MaxAge > 0 && !c.CapturedAt.IsZero() && e.now().Sub(c.CapturedAt) > q.MaxAge {
			if err := e.drop(ctx, c.ID, DropMaxAge); err != nil {
				return false, err
			}
			continue
		}
		s, err := CrashSpans(c)
		if err != nil {
			e.log.Error("crash cannot be exported", "crash", c.ID, "error", err)
			if err := e.drop(ctx, c.ID, DropInvalid); err != nil {
				return false, err
			}
			continue
		}
		ready = append(ready, c)
		spans = append(spans, s...)
	}
	if len(ready) > 0 {
		if err := e.spans.ExportSpans(ctx, spans); err != nil {
			e.metrics.exportFailed()
			if !isPermanent(err) {
				return false, fmt.Errorf("export %d crashes: %w", len(ready), err)
			}
			// The receiver refused the request as malformed: find the
			// crash it refuses by sending one at a time, and drop only that.
			return false, e.exportOneByOne(ctx, ready, err)
		}
		for _, c := range ready {
			if err := e.ack(ctx, c.ID); err != nil {
				return false, err
			}
		}
		e.log.Debug("exported", "crashes", len(ready))
	}
	e.metrics.exportQueueDepth(n - len(batch))
	return len(batch) == q.BatchSize, nil
}

func (e *Exporter) exportOneByOne(ctx context.Context, crashes []report.Crash, batchErr error) error {
	for _, c := range crashes {
		spans, err := CrashSpans(c)
		if err != nil {
			return fmt.Errorf("map crash %s again: %w", c.ID, err)
		}
		if err := e.spans.ExportSpans(ctx, spans); err != nil {
			if !isPermanent(err) {
				return fmt.Errorf("export crash %s: %w", c.ID, err)
			}
			e.log.Error("receiver rejected crash", "crash", c.ID, "error", err)
			if err := e.drop(ctx, c.ID, DropRejected); err != nil {
				return err
			}
			continue
		}
		if err := e.ack(ctx, c.ID); err != nil {
			return err
		}
	}
	e.log.Warn("receiver rejected a batch; exported one by one", "error", batchErr)
	return nil
}

// isPermanent tells a request the receiver will never accept from a failure
// worth retrying (unavailable, deadline, resource exhausted, ...).
func isPermanent(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return status.Code(err) == codes.InvalidArgument
}

func (e *Exporter) ack(ctx context.Context, id string) error {
	if err := e.queue.Ack(ctx, id); err != nil {
		// The trace is in the receiver; exporting it again is harmless
		// (same ids), so this only costs a duplicate send.
		return fmt.Errorf("acknowledge crash %s: %w", id, err)
	}
	e.metrics.exported()
	return nil
}

func (e *Exporter) drop(ctx context.Context, id, reason string) error {
	if err := e.queue.Drop(ctx, id, reason); err != nil {
		return fmt.Errorf("drop crash %s (%s): %w", id, reason, err)
	}
	e.metrics.exportDropped(reason)
	e.log.Warn("crash dropped from export queue", "crash", id, "reason", reason)
	return nil
}

// Export sends one crash now, bypassing the queue. Exporting the same crash
// again yields the same trace. The daemon need not use it; it is there for
// "export again" tooling and tests.
func (e *Exporter) Export(ctx context.Context, c report.Crash) error {
	spans, err := CrashSpans(c)
	if err != nil {
		return err
	}
	if err := e.spans.ExportSpans(ctx, spans); err != nil {
		e.metrics.exportFailed()
		return fmt.Errorf("export crash %s: %w", c.ID, err)
	}
	return nil
}

// Shutdown closes the OTLP client of an Exporter whose Run was never
// started (Run closes it itself when it returns).
func (e *Exporter) Shutdown(ctx context.Context) error {
	if err := e.spans.Shutdown(ctx); err != nil {
		return fmt.Errorf("close otlp exporter: %w", err)
	}
	return nil
}
