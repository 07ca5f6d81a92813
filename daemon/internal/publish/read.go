package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/report"
)

// The socket API and the exporter read through the Publisher: it knows
// whether the store is open, and which reports are not in it yet.

// Crashes returns up to limit reports, newest first: the store's, and
// those only the spool or memory holds (the newer copy of a report wins).
// While the store is unavailable that is the spool and memory alone.
func (p *Publisher) Crashes(limit int) ([]report.Crash, error) {
	byID := map[string]report.Crash{}
	st, healthy := p.store()
	if st != nil {
		cs, err := st.Crashes(limit)
		if err != nil && healthy {
			return nil, err
		}
		for _, c := range cs {
			byID[c.ID] = c
		}
	}
	for _, c := range p.pending(limit) {
		byID[c.ID] = c
	}
	out := make([]report.Crash, 0, len(byID))
	for _, c := range byID {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// pending decodes up to limit of the newest reports memory and the spool
// hold.
func (p *Publisher) pending(limit int) []report.Crash {
	var out []report.Crash
	p.mu.Lock()
	for _, data := range p.mem {
		var c report.Crash
		if json.Unmarshal(data, &c) == nil {
			out = append(out, c)
		}
	}
	p.mu.Unlock()
	ids := p.spool.ids()
	for i := len(ids) - 1; i >= 0 && i >= len(ids)-limit; i-- {
		data, err := p.spool.get(ids[i])
		if err != nil {
			continue
		}
		var c report.Crash
		if json.Unmarshal(data, &c) == nil {
			out = append(out, c)
		}
	}
	return out
}

// Crash returns one report: the copy in memory or the spool (newer) if
// there is one, else the store's.
func (p *Publisher) Crash(id string) (*report.Crash, error) {
	data, ok := p.memGet(id)
	if !ok {
		if b, err := p.spool.get(id); err == nil {
			data, ok = b, true
		}
	}
	if ok {
		var c report.Crash
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("decode pending crash %s: %w", id, err)
		}
		return &c, nil
	}
	st, _ := p.store()
	if st == nil {
		return nil, fmt.Errorf("crash %s: %w (%w)", id, store.ErrNotFound, ErrUnavailable)
	}
	return st.Crash(id)
}

// DeleteCrash deletes a report wherever it is.
func (p *Publisher) DeleteCrash(id string) error {
	_, inMem := p.memGet(id)
	p.memDel(id)
	inSpool := p.spool.has(id)
	if err := p.spool.remove(id); err != nil {
		return err
	}
	st, _ := p.store()
	if st == nil {
		if inMem || inSpool {
			return nil
		}
		return fmt.Errorf("delete crash %s: %w", id, ErrUnavailable)
	}
	err := st.DeleteCrash(id)
	if errors.Is(err, store.ErrNotFound) && (inMem || inSpool) {
		return nil
	}
	return err
}

// CountCrashes is how many reports the store holds (ErrUnavailable while
// it is not open).
func (p *Publisher) CountCrashes() (int, error) {
	st, _ := p.store()
	if st == nil {
		return 0, ErrUnavailable
	}
	return st.CountCrashes()
}

// Queue is the store's durable export queue seen through the Publisher
// (exporter.Queue): ErrUnavailable while the store is not open, which the
// exporter retries with its back-off like any export failure.
type Queue struct{ p *Publisher }

// ExportQueue returns the export queue.
func (p *Publisher) ExportQueue() *Queue { return &Queue{p: p} }

func (q *Queue) queue() (*store.Queue, error) {
	st, _ := q.p.store()
	if st == nil {
		return nil, ErrUnavailable
	}
	return st.ExportQueue(), nil
}

// Pending implements exporter.Queue.
func (q *Queue) Pending(ctx context.Context, limit int) ([]report.Crash, error) {
	sq, err := q.queue()
	if err != nil {
		return nil, err
	}
	return sq.Pending(ctx, limit)
}

// Len implements exporter.Queue.
func (q *Queue) Len(ctx context.Context) (int, error) {
	sq, err := q.queue()
	if err != nil {
		return 0, err
	}
	return sq.Len(ctx)
}

// Ack implements exporter.Queue.
func (q *Queue) Ack(ctx context.Context, id string) error {
	sq, err := q.queue()
	if err != nil {
		return err
	}
	return sq.Ack(ctx, id)
}

// Drop implements exporter.Queue.
func (q *Queue) Drop(ctx context.Context, id, reason string) error {
	sq, err := q.queue()
	if err != nil {
		return err
	}
	return sq.Drop(ctx, id, reason)
}
