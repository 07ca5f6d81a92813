package daemon

import (
	"strings"
	"testing"
	"time"
)

// A loop that turns when kicked is healthy; one that stops turning is
// reported stalled once eventLoopStall has passed since the kick, and
// every later check still says so (the pending kick is not replaced).
func TestLoopCheck(t *testing.T) {
	kicks := make(chan struct{}, 1)
	var l loopCheck
	l.kick = func() error {
		select {
		case kicks <- struct{}{}:
		default:
		}
		return nil
	}
	wedged := make(chan struct{})
	done := make(chan struct{})
	go func() { // the event loop: turns at each kick until wedged
		defer close(done)
		for {
			select {
			case <-kicks:
				l.turned()
			case <-wedged:
				return
			}
		}
	}()
	l.turned()
	for i := 0; i < 3; i++ {
		if err := l.check(); err != nil {
			t.Fatalf("check %d of a turning loop: %v", i, err)
		}
	}
	close(wedged)
	<-done
	start := time.Now()
	err := l.check()
	if err == nil || !strings.Contains(err.Error(), "event loop stalled") {
		t.Fatalf("check of a wedged loop: %v", err)
	}
	if waited := time.Since(start); waited < eventLoopStall {
		t.Errorf("called stalled after %s, before eventLoopStall", waited)
	}
	if err := l.check(); err == nil {
		t.Error("second check of a wedged loop passed")
	}
}
