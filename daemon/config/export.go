package config

import (
	"fmt"
	"time"
)

// ExportConfig is where crash traces go (OpenTelemetry, OTLP).
type ExportConfig struct {
	// Enabled exports every crash as a trace. With nothing listening at
	// the endpoint, crashes wait in the store's queue until something does.
	Enabled bool              `mapstructure:"enabled"`
	OTLP    OTLPConfig        `mapstructure:"otlp"`
	Queue   ExportQueueConfig `mapstructure:"queue"`
	Metrics ExportMetrics     `mapstructure:"metrics"`
}

// ExportMetrics pushes the daemon's metrics over OTLP too (they are always
// served as Prometheus text at /metrics on the socket). The receiver must
// take metrics: an OpenTelemetry Collector, not Jaeger.
type ExportMetrics struct {
	Enabled  bool          `mapstructure:"enabled"`
	Interval time.Duration `mapstructure:"interval"`
}

// OTLPConfig is the OTLP receiver (Jaeger, an OpenTelemetry Collector).
type OTLPConfig struct {
	Protocol    string        `mapstructure:"protocol"` // grpc or http
	Endpoint    string        `mapstructure:"endpoint"` // host:port
	URLPath     string        `mapstructure:"url_path"` // http only; "" = /v1/traces
	Insecure    bool          `mapstructure:"insecure"` // plain text; else TLS
	Timeout     time.Duration `mapstructure:"timeout"`
	Compression string        `mapstructure:"compression"` // gzip or ""
	// Headers are sent with every export (e.g. authorization); file only.
	Headers map[string]string `mapstructure:"headers"`
	TLS     OTLPTLSConfig     `mapstructure:"tls"`
}

// OTLPTLSConfig configures TLS to the receiver.
type OTLPTLSConfig struct {
	CAFile     string `mapstructure:"ca_file"`
	CertFile   string `mapstructure:"cert_file"`
	KeyFile    string `mapstructure:"key_file"`
	ServerName string `mapstructure:"server_name"`
}

// ExportQueueConfig bounds the durable export queue and paces retries.
type ExportQueueConfig struct {
	BatchSize    int           `mapstructure:"batch_size"`
	MaxAge       time.Duration `mapstructure:"max_age"`
	MaxPending   int           `mapstructure:"max_pending"`
	RetryInitial time.Duration `mapstructure:"retry_initial"`
	RetryMax     time.Duration `mapstructure:"retry_max"`
	Poll         time.Duration `mapstructure:"poll"`
}

// validate checks export.*: the OTLP receiver (protocol, endpoint when
// export is on, compression, timeout), the metrics push interval, and the
// export queue's sizes and retry timings.
func (e ExportConfig) validate() []error {
	var errs configErrors
	switch e.OTLP.Protocol {
	case "grpc", "http":
	default:
		errs.bad("export.otlp.protocol", e.OTLP.Protocol, "must be grpc or http")
	}
	if e.Enabled && e.OTLP.Endpoint == "" {
		errs.bad("export.otlp.endpoint", `""`, "must be host:port when export.enabled")
	}
	switch e.OTLP.Compression {
	case "", "none", "gzip":
	default:
		errs.bad("export.otlp.compression", e.OTLP.Compression, "must be gzip or none")
	}
	if e.OTLP.Timeout <= 0 {
		errs.bad("export.otlp.timeout", e.OTLP.Timeout, "must be positive")
	}
	if e.Metrics.Enabled && e.Metrics.Interval < time.Second {
		errs.bad("export.metrics.interval", e.Metrics.Interval, "must be at least 1s")
	}
	q := e.Queue
	if q.BatchSize < 1 || q.MaxPending < 1 {
		errs.bad("export.queue.batch_size/max_pending", fmt.Sprint(q.BatchSize, "/", q.MaxPending), "must be at least 1")
	}
	if q.RetryInitial <= 0 || q.RetryMax < q.RetryInitial || q.Poll <= 0 || q.MaxAge <= 0 {
		errs.bad("export.queue durations", fmt.Sprint(q.RetryInitial, "/", q.RetryMax, "/", q.Poll, "/", q.MaxAge),
			"must be positive, retry_max at least retry_initial")
	}
	return errs
}
