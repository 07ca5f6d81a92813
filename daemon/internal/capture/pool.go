package capture

import (
	"sync"
	"time"
)

// maxAnalyseWait bounds how long analysis defers to held processes.
const maxAnalyseWait = time.Second

// pool bounds the work of parallel sessions. Copies (while a process is
// held) take one of a fixed number of slots; analyses (after release) run
// one at a time, and first wait until no process is held, so that in a
// storm the CPU goes to the copies that end freezes. One at a time also
// because Finishers share per-binary state that is not safe for
// concurrent use (debug/dwarf's type cache: two diagnoses of one binary
// at once crashed the daemon with "concurrent map read and map write").
type pool struct {
	copies   chan struct{}
	analyses chan struct{}

	mu sync.Mutex
	// held counts sessions between hold and release; none is closed
	// while it is zero.
	held int
	none chan struct{}
	// onHolding hears of the first hold and of the last release
	// (Config.OnHolding); may be nil.
	onHolding func(bool)
}

func newPool(workers int, onHolding func(bool)) *pool {
	p := &pool{copies: make(chan struct{}, workers), analyses: make(chan struct{}, 1), none: make(chan struct{}),
		onHolding: onHolding}
	close(p.none)
	return p
}

// holding counts a session from its hold (+1) to its release (-1).
func (p *pool) holding(delta int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == 0 && delta > 0 {
		p.none = make(chan struct{})
		if p.onHolding != nil {
			p.onHolding(true)
		}
	}
	p.held += delta
	if p.held == 0 {
		close(p.none)
		if p.onHolding != nil {
			p.onHolding(false)
		}
	}
}

func (p *pool) noneHeld() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.none
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

// analyse runs fn in the analysis slot, once no process is held (or after
// maxAnalyseWait).
func (p *pool) analyse(fn func()) {
	t := time.NewTimer(maxAnalyseWait)
	select {
	case <-p.noneHeld():
	case <-t.C:
	}
	t.Stop()
	p.analyses <- struct{}{}
	defer func() { <-p.analyses }()
	fn()
}
