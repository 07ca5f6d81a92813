package tracehold

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Wakeup tells every tracer waiting for stops that some child or tracee
// of this process changed state (the kernel sends the tracer's process
// SIGCHLD for each ptrace-stop), so that it looks at once instead of at
// its next poll. One per process; without it tracers poll.
type Wakeup struct {
	sig  chan os.Signal
	mu   sync.Mutex
	gen  chan struct{}
	done chan struct{}
}

// NewWakeup starts listening for SIGCHLD. Stop it when done.
func NewWakeup() *Wakeup {
	w := &Wakeup{sig: make(chan os.Signal, 1), gen: make(chan struct{}), done: make(chan struct{})}
	signal.Notify(w.sig, syscall.SIGCHLD)
	go w.run()
	return w
}

func (w *Wakeup) run() {
	for {
		select {
		case <-w.sig:
		case <-w.done:
			return
		}
		w.mu.Lock()
		close(w.gen)
		w.gen = make(chan struct{})
		w.mu.Unlock()
	}
}

// C is closed at the next SIGCHLD: take it before looking, then wait on it.
func (w *Wakeup) C() <-chan struct{} {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

// Stop stops listening.
func (w *Wakeup) Stop() {
	signal.Stop(w.sig)
	close(w.done)
}
