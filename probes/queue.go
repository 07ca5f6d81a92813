package probes

import (
	"context"
	"sync"
	"time"
)

// Priorities of discovery work, highest first: an exec held in the kernel
// by the gate, then a process that just started (its exec event), then
// the background /proc scan.
const (
	prioGate = iota
	prioExec
	prioScan
	numPrios
)

// Where a binary was first seen (BinaryStatus.FoundBy).
const (
	ViaGate    = "exec-gate"
	ViaExec    = "exec-event"
	ViaScan    = "scan"
	ViaRequest = "request"
)

// sighting is a binary seen about to run or running: what a worker needs
// to classify it, inspect it and attach its probes.
type sighting struct {
	via  string
	pid  int    // 0: none (a gate event is handled before the exec)
	path string // what to open: /proc/PID/exe or /proc/self/fd/N
	key  FileKey
	gen  FileGen
	at   time.Time
	err  error // why sightPID found nothing
	// finish, when set, is called once the worker is through with the
	// binary: the gate answers the held exec, and stops holding the file's
	// execs when settled (probed, rejected or failed for good, with these
	// contents). release is called when the worker is done with path.
	finish  func(settled bool)
	release func()
}

func (s *sighting) done(settled bool) {
	if s.finish != nil {
		s.finish(settled)
		s.finish = nil
	}
}

// workQueue is discovery's bounded priority queue.
type workQueue struct {
	mu      sync.Mutex
	q       [numPrios][]sighting
	max     [numPrios]int
	dropped [numPrios]uint64
	notify  chan struct{}
}

func newWorkQueue() *workQueue {
	return &workQueue{
		max:    [numPrios]int{4096, 4096, 1 << 16},
		notify: make(chan struct{}, 1),
	}
}

// push queues s; false (counted) when that priority's queue is full.
func (w *workQueue) push(prio int, s sighting) bool {
	w.mu.Lock()
	if len(w.q[prio]) >= w.max[prio] {
		w.dropped[prio]++
		w.mu.Unlock()
		return false
	}
	w.q[prio] = append(w.q[prio], s)
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
	return true
}

// pop returns the oldest sighting of the highest priority, waiting for
// one until ctx ends.
func (w *workQueue) pop(ctx context.Context) (sighting, bool) {
	for {
		w.mu.Lock()
		for p := range w.q {
			if len(w.q[p]) > 0 {
				s := w.q[p][0]
				w.q[p][0] = sighting{}
				w.q[p] = w.q[p][1:]
				if len(w.q[p]) == 0 {
					w.q[p] = nil // let the backing array go
				}
				more := false
				for _, q := range w.q {
					more = more || len(q) > 0
				}
				w.mu.Unlock()
				if more { // wake another worker
					select {
					case w.notify <- struct{}{}:
					default:
					}
				}
				return s, true
			}
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return sighting{}, false
		case <-w.notify:
		}
	}
}

// drain removes and returns everything queued.
func (w *workQueue) drain() []sighting {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []sighting
	for p := range w.q {
		out = append(out, w.q[p]...)
		w.q[p] = nil
	}
	return out
}

func (w *workQueue) lens() (queued int, dropped uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p := range w.q {
		queued += len(w.q[p])
		dropped += w.dropped[p]
	}
	return queued, dropped
}
