// Package logsink owns the daemon's log output: a writer that never
// blocks its caller. A log line is copied into a bounded queue and written
// out by one goroutine; when the output does not keep up (a journald
// behind on a busy host, a pipe nobody reads) lines are dropped and
// counted, and the count is written once the output moves again.
//
// The daemon logs from the goroutines that hold crashing processes: a
// blocked stderr must not become a longer freeze. Found in a crash storm,
// where a stderr pipe read by a process starved of CPU stalled every
// goroutine that logged, the ring-buffer reader included, for 140 ms.
package logsink

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Writer is an io.Writer that queues what is written and writes it to the
// underlying writer in the background, at most maxBytes queued.
type Writer struct {
	out      io.Writer
	maxBytes int

	mu      sync.Mutex
	queue   [][]byte
	queued  int
	dropped uint64
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

// New starts a Writer in front of out that queues at most maxBytes.
func New(out io.Writer, maxBytes int) *Writer {
	w := &Writer{out: out, maxBytes: maxBytes, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
}

// Write queues a copy of p; it never blocks on the output. A line that
// does not fit is dropped and counted (len(p) is returned either way:
// a logger has nothing better to do with an error).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed || w.queued+len(p) > w.maxBytes {
		w.dropped++
		w.mu.Unlock()
		return len(p), nil
	}
	w.queue = append(w.queue, append([]byte(nil), p...))
	w.queued += len(p)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Dropped counts the lines dropped so far.
func (w *Writer) Dropped() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}

func (w *Writer) run() {
	defer close(w.done)
	var reported uint64
	for {
		w.mu.Lock()
		batch, dropped, closed := w.queue, w.dropped, w.closed
		w.queue, w.queued = nil, 0
		w.mu.Unlock()
		for _, line := range batch {
			w.out.Write(line)
		}
		if len(batch) > 0 { // drops while the output was blocked
			w.mu.Lock()
			dropped = w.dropped
			w.mu.Unlock()
		}
		if dropped > reported {
			fmt.Fprintf(w.out, "time=%s level=WARN msg=\"log output blocked: lines dropped\" dropped=%d\n",
				time.Now().UTC().Format(time.RFC3339Nano), dropped-reported)
			reported = dropped
		}
		if closed && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			<-w.wake
		}
	}
}

// Close writes out what is queued, waiting at most wait for the output,
// and stops the Writer; later writes are dropped.
func (w *Writer) Close(wait time.Duration) {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	}
}
