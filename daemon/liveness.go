package daemon

import (
	"fmt"
	"sync/atomic"
	"time"
)

// eventLoopStall is how long a kicked event loop may take to turn before
// the daemon calls itself wedged (and stops pinging systemd's watchdog,
// which restarts it). An idle loop answers a kick in microseconds.
const eventLoopStall = time.Second

// loopCheck tells a wedged event loop from an idle one without waking an
// idle daemon. The crash reader blocks until an event comes (no deadline:
// on a small VM every timer wake-up of an idle Go process costs ~0.2 ms of
// CPU, and a host watcher idles almost always); a health check kicks it
// (ringbuf Reader.Flush) and waits for it to turn.
type loopCheck struct {
	kick func() error
	// beat is when the loop last turned, kicked when the pending kick was
	// sent (unix ns; 0: none).
	beat, kicked atomic.Int64
}

// turned records a turn of the loop: it answers any kick sent before.
func (l *loopCheck) turned() { l.beat.Store(time.Now().UnixNano()) }

// check kicks the loop unless a kick is pending, and waits until the loop
// has answered or eventLoopStall has passed since the kick. Concurrent
// checks share a pending kick.
func (l *loopCheck) check() error {
	k := l.kicked.Load()
	if k == 0 || l.beat.Load() >= k {
		k = time.Now().UnixNano()
		l.kicked.Store(k)
		if err := l.kick(); err != nil {
			return fmt.Errorf("kick the event loop: %w", err)
		}
	}
	deadline := time.Unix(0, k).Add(eventLoopStall)
	for l.beat.Load() < k {
		if time.Now().After(deadline) {
			return fmt.Errorf("event loop stalled for %s", time.Since(time.Unix(0, k)).Round(time.Millisecond))
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}
