package exporter

import (
	"context"
	"errors"
	"sync"

	"github.com/mapsentry/mapsentry/report"
)

// memQueue is an in-memory Queue for tests. The daemon's store implements
// the real, durable one. It counts acknowledgements per id so that tests
// can check that each crash was acknowledged exactly once.
type memQueue struct {
	mu      sync.Mutex
	pending []report.Crash
	acked   map[string]int
	dropped map[string]string
	failLen error // when set, Len fails (a broken store)
}

func newMemQueue(crashes ...report.Crash) *memQueue {
	return &memQueue{pending: crashes, acked: map[string]int{}, dropped: map[string]string{}}
}

func (q *memQueue) Add(c report.Crash) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(q.pending, c)
}

func (q *memQueue) Pending(_ context.Context, limit int) ([]report.Crash, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(limit, len(q.pending))
	return append([]report.Crash(nil), q.pending[:n]...), nil
}

func (q *memQueue) Len(context.Context) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failLen != nil {
		return 0, q.failLen
	}
	return len(q.pending), nil
}

func (q *memQueue) remove(id string) bool {
	for i, c := range q.pending {
		if c.ID == id {
			q.pending = append(q.pending[:i], q.pending[i+1:]...)
			return true
		}
	}
	return false
}

func (q *memQueue) Ack(_ context.Context, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.remove(id) {
		q.acked[id]++
	}
	return nil
}

func (q *memQueue) Drop(_ context.Context, id, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.remove(id) {
		return errors.New("drop unknown id " + id)
	}
	q.dropped[id] = reason
	return nil
}

func (q *memQueue) snapshot() (pending int, acked map[string]int, dropped map[string]string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	a := make(map[string]int, len(q.acked))
	for k, v := range q.acked {
		a[k] = v
	}
	d := make(map[string]string, len(q.dropped))
	for k, v := range q.dropped {
		d[k] = v
	}
	return len(q.pending), a, d
}
