package retry

import (
	"testing"
	"time"
)

func TestBackoffDoublesWithinBoundsWithJitter(t *testing.T) {
	const initial, max = time.Second, 8 * time.Second
	var d time.Duration
	for i := range 10 {
		base := min(2*d, max)
		if d == 0 {
			base = initial
		}
		d = Backoff(d, initial, max)
		if d < base || d > base+base/5 {
			t.Fatalf("after %d failures: %s, want within [%s, %s] (double the last, at most %s, plus up to 20%%)",
				i+1, d, base, base+base/5, max)
		}
	}
	if d < max {
		t.Errorf("after 10 failures: %s, want the maximum %s", d, max)
	}
}
