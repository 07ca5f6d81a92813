package daemon

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// gcHeadroom is how far the daemon's memory may grow while collection is
// deferred before the runtime collects anyway (its memory limit).
const gcHeadroom = 256 << 20

// gcQuiet is how long no process must have been held before collection
// comes back: a storm's holds come and go every few milliseconds, and a
// collection put back between two of them starts at once (the heap is
// past its goal by then).
const gcQuiet = 250 * time.Millisecond

// gcPause defers the daemon's garbage collection while any process is
// held. A collection stops the world, and stopping it waits for every
// daemon thread to reach a safe point: in a crash storm, threads that
// wait for a CPU behind the victims made pauses of 10 ms and more (go
// GODEBUG=gctrace=1, one collection every 20-40 ms of a storm), during
// which no hold advanced. Collection comes back once no process has been
// held for gcQuiet. Holds are bounded by freeze.max, and the
// memory a deferral may cost by gcHeadroom (a memory limit, under any
// limit the operator set with GOMEMLIMIT): past it the runtime collects
// anyway.
type gcPause struct {
	want chan bool // the latest wish; one producer (capture's pool)
}

func newGCPause() *gcPause { return &gcPause{want: make(chan bool, 1)} }

// set asks for collection deferred (true) or back (false). It never
// blocks: its caller holds the pool's lock; the latest wish wins.
func (g *gcPause) set(deferred bool) {
	select {
	case <-g.want:
	default:
	}
	g.want <- deferred
}

// Run applies the wishes until ctx ends, and puts collection back then.
func (g *gcPause) Run(ctx context.Context) error {
	paused := false
	var percent int
	var limit int64
	resume := func() {
		if paused {
			debug.SetGCPercent(percent)
			debug.SetMemoryLimit(limit)
			paused = false
		}
	}
	defer resume()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-quiet.C:
			resume()
		case deferred := <-g.want:
			quiet.Stop()
			if !deferred {
				if paused {
					quiet.Reset(gcQuiet)
				}
				continue
			}
			if paused {
				continue
			}
			limit = debug.SetMemoryLimit(-1)
			if l := memoryInUse() + gcHeadroom; l < limit {
				debug.SetMemoryLimit(l)
			}
			// Waits for a collection under way to finish: here, not on
			// the hold path.
			percent = debug.SetGCPercent(-1)
			paused = true
		}
	}
}

// memoryInUse is the memory the Go runtime has mapped and uses
// (runtime/metrics: no stop of the world, unlike ReadMemStats).
func memoryInUse() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return math.MaxInt64 - gcHeadroom
	}
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}
