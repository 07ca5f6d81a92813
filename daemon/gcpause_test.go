package daemon

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func gcSettings() (percent, limit int64) {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64()), int64(s[1].Value.Uint64())
}

// Collection is off while a process is held, with a memory limit as the
// backstop, and both are back as they were after, and when Run ends.
func TestGCPause(t *testing.T) {
	percent0, limit0 := gcSettings()
	g := newGCPause()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	wait := func(what string, ok func(p, l int64) bool) {
		t.Helper()
		for start := time.Now(); ; time.Sleep(time.Millisecond) {
			if p, l := gcSettings(); ok(p, l) {
				return
			} else if time.Since(start) > 5*time.Second {
				t.Fatalf("%s: gogc %d, memory limit %d", what, p, l)
			}
		}
	}
	paused := func(p, l int64) bool { return p < 0 && l < limit0 && l > gcHeadroom }
	back := func(p, l int64) bool { return p == percent0 && l == limit0 }
	g.set(true)
	wait("held", paused)
	g.set(false)
	wait("released", back)
	g.set(true)
	wait("held again", paused)
	cancel()
	<-done
	if p, l := gcSettings(); !back(p, l) {
		t.Errorf("after Run: gogc %d, memory limit %d, want %d and %d", p, l, percent0, limit0)
	}
	debug.SetGCPercent(int(percent0))
}
