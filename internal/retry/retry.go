// Package retry owns the one retry-delay rule the daemon's retry loops
// share (OTLP export, the report store): exponential, bounded, jittered.
package retry

import (
	"math/rand/v2"
	"time"
)

// Backoff doubles prev within [initial, max] and adds up to 20% jitter, so
// that many daemons coming back after the same outage spread out. prev 0
// starts at initial.
func Backoff(prev, initial, max time.Duration) time.Duration {
	next := prev * 2
	if prev == 0 {
		next = initial
	}
	if next > max {
		next = max
	}
	return next + time.Duration(rand.Int64N(int64(next)/5+1))
}
