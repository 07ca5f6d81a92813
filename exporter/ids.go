package exporter

import (
	"crypto/sha256"

	"go.opentelemetry.io/otel/trace"
)

// TraceID is the trace id of the crash with the given id: the first 16 bytes
// of SHA-256("mapsentry/crash/" + id). Deterministic, so exporting a crash
// again (after a daemon restart, or because an acknowledgement was lost)
// lands in the same trace, and Jaeger's query-time de-duplication of
// identical spans shows it once. Use it to build a Jaeger URL for a crash.
func TraceID(crashID string) trace.TraceID {
	sum := sha256.Sum256([]byte("mapsentry/crash/" + crashID))
	var id trace.TraceID
	copy(id[:], sum[:16])
	if !id.IsValid() { // all zero: astronomically unlikely, but invalid in OTLP
		id[15] = 1
	}
	return id
}

// spanID is the id of the span named path inside the crash's trace.
func spanID(crashID, path string) trace.SpanID {
	sum := sha256.Sum256([]byte("mapsentry/crash/" + crashID + "/span/" + path))
	var id trace.SpanID
	copy(id[:], sum[:8])
	if !id.IsValid() {
		id[7] = 1
	}
	return id
}
