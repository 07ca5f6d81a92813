package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/exporter"
	"github.com/mapsentry/mapsentry/report"
)

// exporterConfig maps the daemon's export.* keys to the exporter's config.
func exporterConfig(c config.ExportConfig) exporter.Config {
	return exporter.Config{
		Protocol:    c.OTLP.Protocol,
		Endpoint:    c.OTLP.Endpoint,
		URLPath:     c.OTLP.URLPath,
		Insecure:    c.OTLP.Insecure,
		Timeout:     c.OTLP.Timeout,
		Compression: c.OTLP.Compression,
		Headers:     c.OTLP.Headers,
		TLS: exporter.TLSConfig{
			CAFile: c.OTLP.TLS.CAFile, CertFile: c.OTLP.TLS.CertFile,
			KeyFile: c.OTLP.TLS.KeyFile, ServerName: c.OTLP.TLS.ServerName,
		},
		Queue: exporter.QueueConfig{
			BatchSize: c.Queue.BatchSize, MaxAge: c.Queue.MaxAge, MaxPending: c.Queue.MaxPending,
			RetryInitial: c.Queue.RetryInitial, RetryMax: c.Queue.RetryMax, Poll: c.Queue.Poll,
		},
	}
}

// newMetrics makes the metrics, also pushed over OTLP with
// export.metrics.enabled.
func (d *Daemon) newMetrics(ctx context.Context) (*exporter.Metrics, error) {
	if !d.cfg.Export.Metrics.Enabled {
		return exporter.NewMetrics()
	}
	r, err := exporter.NewOTLPMetricReader(ctx, exporterConfig(d.cfg.Export), d.cfg.Export.Metrics.Interval)
	if err != nil {
		return nil, fmt.Errorf("OTLP metric push: %w", err)
	}
	return exporter.NewMetrics(r)
}

// newExporter builds the OTLP exporter over the store's durable queue, or
// returns nil when export is disabled.
func (d *Daemon) newExporter(ctx context.Context, metrics *exporter.Metrics, log *slog.Logger) (*exporter.Exporter, error) {
	if !d.cfg.Export.Enabled {
		log.Info("OTLP export disabled (export.enabled=false)")
		return nil, nil
	}
	exp, err := exporter.New(ctx, exporterConfig(d.cfg.Export), d.pub.ExportQueue(), metrics, log)
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	return exp, nil
}

// onStored feeds metrics when a capture is complete. The exporter is
// woken by the publisher once a report or an update reached the store
// (the queue hands a crash out once its report is final, exit seen,
// which is usually an update, not the first store).
func onStored(metrics *exporter.Metrics) func(*report.Crash, bool) {
	return func(c *report.Crash, first bool) {
		if first {
			metrics.CrashCaptured(*c)
		}
	}
}
