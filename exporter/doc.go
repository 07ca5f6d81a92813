// Package exporter owns turning crash reports into OpenTelemetry: one trace
// per report.Crash (deterministic trace and span ids derived from the crash
// id, so a re-export never duplicates a trace), the OTLP gRPC and
// HTTP/protobuf clients that send them, the retry loop that drains the
// daemon's durable export queue, and the daemon's metrics served as
// Prometheus text.
//
// It does not own durability: the daemon's store implements Queue, and a
// crash leaves the queue only when Run acknowledges (exported) or drops it
// (bounded by age and size, every drop counted).
//
// Every custom attribute is named under mapsentry.* and documented in
// docs/export.md; attributes.go is the single list of names.
package exporter
