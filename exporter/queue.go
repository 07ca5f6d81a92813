package exporter

import (
	"context"

	"github.com/mapsentry/mapsentry/report"
)

// Queue is the durable export queue: crashes committed to the store and not
// yet exported. The daemon's store implements it; the exporter never keeps
// a crash anywhere else, so nothing is lost across an outage of the OTLP
// receiver or a daemon restart. Implementations must be safe for use by one
// Run loop concurrently with the daemon adding crashes.
type Queue interface {
	// Pending returns up to limit crashes that are neither acknowledged nor
	// dropped, oldest first.
	Pending(ctx context.Context, limit int) ([]report.Crash, error)
	// Len is the number of crashes waiting.
	Len(ctx context.Context) (int, error)
	// Ack records that the crash with this id was exported; Pending must
	// not return it again. Acknowledging an unknown id is not an error.
	Ack(ctx context.Context, id string) error
	// Drop gives up exporting the crash with this id, for reason (one of
	// the Drop* constants). The crash itself stays in the store.
	Drop(ctx context.Context, id string, reason string) error
}

// Reasons passed to Queue.Drop and used as the reason label of
// mapsentry_export_dropped_total.
const (
	DropMaxAge    = "max_age"    // older than export.otlp.queue.max_age
	DropQueueFull = "queue_full" // more than export.otlp.queue.max_pending waiting
	DropInvalid   = "invalid"    // cannot become a trace (ErrInvalidCrash)
	DropRejected  = "rejected"   // the receiver refused it as malformed
)
