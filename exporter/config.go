package exporter

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/credentials"
)

// Protocols accepted in Config.Protocol.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http" // OTLP/HTTP with protobuf bodies
)

// Config is the OTLP export configuration, loaded by the daemon (keys
// export.otlp.*, see docs/export.md) and passed in; nothing here reads the
// environment or a config file.
type Config struct {
	// Protocol is "grpc" (default) or "http".
	Protocol string
	// Endpoint is host:port of the OTLP receiver; default 127.0.0.1:4317
	// for grpc and 127.0.0.1:4318 for http.
	Endpoint string
	// URLPath is the OTLP/HTTP path; default /v1/traces. Ignored for grpc.
	URLPath string
	// Insecure sends in plain text. When false, TLS is used, verified
	// against CAFile (or the system roots when empty).
	Insecure bool
	TLS      TLSConfig
	// Headers are sent with every export (e.g. an authorization token).
	Headers map[string]string
	// Timeout bounds one export call; default 10s.
	Timeout time.Duration
	// Compression is "gzip" or "" (none).
	Compression string

	// Queue is how Run drains the durable queue.
	Queue QueueConfig
}

// TLSConfig configures TLS to the OTLP receiver.
type TLSConfig struct {
	CAFile     string // PEM roots to verify the receiver; empty: system roots
	CertFile   string // client certificate (PEM) for mutual TLS
	KeyFile    string // its private key (PEM)
	ServerName string // overrides the name verified in the receiver's certificate
}

// QueueConfig bounds the export queue and paces retries.
type QueueConfig struct {
	// BatchSize is the most crashes sent in one export call; default 32.
	BatchSize int
	// MaxAge drops a crash captured longer ago than this without being
	// exported; default 7 days. Zero after defaults means no limit.
	MaxAge time.Duration
	// MaxPending drops the oldest crashes while more than this many wait;
	// default 10000.
	MaxPending int
	// RetryInitial is the first wait after a failed export; default 1s.
	RetryInitial time.Duration
	// RetryMax caps the exponential back-off; default 5m.
	RetryMax time.Duration
	// Poll is how often the queue is looked at without a Notify; default 30s.
	Poll time.Duration
}

// DefaultConfig is plain-text gRPC to a local collector or Jaeger, the
// common single-host set-up.
func DefaultConfig() Config {
	c := Config{Protocol: ProtocolGRPC, Insecure: true}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Protocol == "" {
		c.Protocol = ProtocolGRPC
	}
	if c.Endpoint == "" {
		c.Endpoint = "127.0.0.1:4317"
		if c.Protocol == ProtocolHTTP {
			c.Endpoint = "127.0.0.1:4318"
		}
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	q := &c.Queue
	if q.BatchSize == 0 {
		q.BatchSize = 32
	}
	if q.MaxAge == 0 {
		q.MaxAge = 7 * 24 * time.Hour
	}
	if q.MaxPending == 0 {
		q.MaxPending = 10000
	}
	if q.RetryInitial == 0 {
		q.RetryInitial = time.Second
	}
	if q.RetryMax == 0 {
		q.RetryMax = 5 * time.Minute
	}
	if q.Poll == 0 {
		q.Poll = 30 * time.Second
	}
}

// Validate reports every problem in c at once, in terms of the config keys.
func (c Config) Validate() error {
	var errs []error
	switch c.Protocol {
	case "", ProtocolGRPC, ProtocolHTTP:
	default:
		errs = append(errs, fmt.Errorf("export.otlp.protocol %q: want grpc or http", c.Protocol))
	}
	switch c.Compression {
	case "", "none", "gzip":
	default:
		errs = append(errs, fmt.Errorf("export.otlp.compression %q: want gzip or none", c.Compression))
	}
	if c.Insecure && (c.TLS.CAFile != "" || c.TLS.CertFile != "") {
		errs = append(errs, errors.New("export.otlp.insecure is set together with export.otlp.tls.*: choose one"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("export.otlp.tls.cert_file and export.otlp.tls.key_file go together"))
	}
	if c.Timeout < 0 || c.Queue.MaxAge < 0 || c.Queue.RetryInitial < 0 || c.Queue.RetryMax < 0 || c.Queue.Poll < 0 {
		errs = append(errs, errors.New("export.otlp durations must not be negative"))
	}
	if c.Queue.BatchSize < 0 || c.Queue.MaxPending < 0 {
		errs = append(errs, errors.New("export.otlp.queue sizes must not be negative"))
	}
	return errors.Join(errs...)
}

func (c Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName}
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read export.otlp.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("export.otlp.tls.ca_file %s: no PEM certificate found", c.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load export.otlp.tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// newSpanExporter builds the OTLP client for c. The client's own retry is
// off: Run retries with its own back-off, against the durable queue, so a
// failing export returns at once instead of blocking the loop.
func newSpanExporter(ctx context.Context, c Config) (sdktrace.SpanExporter, error) {
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid export config: %w", err)
	}
	var tc *tls.Config
	if !c.Insecure {
		var err error
		if tc, err = c.tlsConfig(); err != nil {
			return nil, err
		}
	}
	switch c.Protocol {
	case ProtocolHTTP:
		opts := []otlptracehttp.Option{
			otlptracehttp.WithEndpoint(c.Endpoint),
			otlptracehttp.WithTimeout(c.Timeout),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
		}
		if c.URLPath != "" {
			opts = append(opts, otlptracehttp.WithURLPath(c.URLPath))
		}
		if c.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		} else {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(tc))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(c.Headers))
		}
		if c.Compression == "gzip" {
			opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("create otlp/http exporter for %s: %w", c.Endpoint, err)
		}
		return exp, nil
	default:
		opts := []otlptracegrpc.Option{
			otlptracegrpc.WithEndpoint(c.Endpoint),
			otlptracegrpc.WithTimeout(c.Timeout),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}),
		}
		if c.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tc)))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(c.Headers))
		}
		if c.Compression == "gzip" {
			opts = append(opts, otlptracegrpc.WithCompressor("gzip"))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("create otlp/grpc exporter for %s: %w", c.Endpoint, err)
		}
		return exp, nil
	}
}
