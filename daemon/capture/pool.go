package capture

import (
	"sync/atomic"
	"time"
)

// maxAnalyseWait bounds how long analysis defers to held processes.
const maxAnalyseWait = time.Second

// pool bounds the work of parallel sessions. Copies (while a process is
// held) take one of a fixed number of slots; analyses (after release)
// take slots too, and first wait until no process is held, so that in a
// storm the CPU goes to the copies that end freezes.
type pool struct {
	copies   chan struct{}
	analyses chan struct{}
	// held counts sessions between hold and release.
	held atomic.Int64
}

func newPool(workers int) *pool {
	return &pool{copies: make(chan struct{}, workers), analyses: make(chan struct{}, workers)}
}

// acquire waits for a copy slot until deadline; false when the deadline
// came first (the hold's own deadline has released the process then).
func (p *pool) acquire(deadline time.Time) bool {
	select {
	case p.copies <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case p.copies <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

func (p *pool) done() { <-p.copies }

// analyse runs fn in an analysis slot, once no process is held (or after
// maxAnalyseWait).
func (p *pool) analyse(fn func()) {
	for waited := time.Duration(0); p.held.Load() > 0 && waited < maxAnalyseWait; waited += time.Millisecond {
		time.Sleep(time.Millisecond)
	}
	p.analyses <- struct{}{}
	defer func() { <-p.analyses }()
	fn()
}
