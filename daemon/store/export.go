package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mapsentry/mapsentry/report"
)

// Export bookkeeping: every stored crash gets an entry in exportPending in
// the same transaction, so a crash can never be stored and forgotten by
// the exporter; Ack and Drop move it out. Dropped ones keep their reason.
var (
	bucketExportPending = []byte("export_pending")
	bucketExportDropped = []byte("export_dropped")
)

// A trace cannot be amended once sent (a re-export would duplicate its
// spans), so a crash waits until its report is final: resumed, and its
// exit seen — the late fatal events of threads that reached fatal after
// the release come before the exit. Bounded waits keep nothing forever:
// a process still alive exitGrace after its resume, or a capture a dead
// daemon left unfinished for unfinishedGrace, goes out as it stands.
const (
	exitGrace       = 10 * time.Second
	unfinishedGrace = time.Minute
)

func final(c *report.Crash) bool {
	age := time.Since(c.CapturedAt)
	switch {
	case !c.Freeze.Resumed:
		return age >= unfinishedGrace
	case c.Freeze.ExitStatus == nil && c.Freeze.ExitSignal == nil:
		return age >= exitGrace+time.Duration(c.Freeze.FrozenNS)
	}
	return true
}

// Queue is the store seen by the exporter (exporter.Queue).
type Queue struct{ s *Store }

// ExportQueue returns the durable export queue.
func (s *Store) ExportQueue() *Queue { return &Queue{s: s} }

func (s *Store) markPending(tx *bolt.Tx, id string) error {
	b, err := tx.CreateBucketIfNotExists(bucketExportPending)
	if err != nil {
		return err
	}
	if tx.Bucket(bucketExportDropped) != nil && tx.Bucket(bucketExportDropped).Get([]byte(id)) != nil {
		return nil
	}
	if b.Get([]byte(id)) != nil {
		return nil
	}
	return b.Put([]byte(id), []byte{1})
}

// Pending returns up to limit crashes waiting for export, oldest first.
// A capture still in progress is held back (its report is not final yet)
// unless it is older than a minute.
func (q *Queue) Pending(ctx context.Context, limit int) ([]report.Crash, error) {
	var out []report.Crash
	var stale [][]byte
	err := q.s.view(func(tx *bolt.Tx) error {
		p := tx.Bucket(bucketExportPending)
		if p == nil {
			return nil
		}
		crashes := tx.Bucket(bucketCrashes)
		c := p.Cursor()
		for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			v := crashes.Get(k)
			if v == nil { // deleted or retired: nothing to export
				stale = append(stale, append([]byte(nil), k...))
				continue
			}
			var cr report.Crash
			if err := json.Unmarshal(v, &cr); err != nil {
				return fmt.Errorf("decode crash %s: %w", k, err)
			}
			if !final(&cr) {
				continue
			}
			out = append(out, cr)
		}
		return nil
	})
	if err == nil && len(stale) > 0 {
		err = q.s.update(func(tx *bolt.Tx) error {
			for _, k := range stale {
				if err := tx.Bucket(bucketExportPending).Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return out, err
}

// Len is how many crashes wait for export.
func (q *Queue) Len(ctx context.Context) (int, error) {
	n := 0
	err := q.s.view(func(tx *bolt.Tx) error {
		if p := tx.Bucket(bucketExportPending); p != nil {
			c := p.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				n++
			}
		}
		return nil
	})
	return n, err
}

// Ack records a crash as exported.
func (q *Queue) Ack(ctx context.Context, id string) error {
	return q.s.update(func(tx *bolt.Tx) error {
		if p := tx.Bucket(bucketExportPending); p != nil {
			return p.Delete([]byte(id))
		}
		return nil
	})
}

// Drop gives up exporting a crash, keeping the reason; the crash stays.
func (q *Queue) Drop(ctx context.Context, id, reason string) error {
	return q.s.update(func(tx *bolt.Tx) error {
		if p := tx.Bucket(bucketExportPending); p != nil {
			if err := p.Delete([]byte(id)); err != nil {
				return err
			}
		}
		d, err := tx.CreateBucketIfNotExists(bucketExportDropped)
		if err != nil {
			return err
		}
		return d.Put([]byte(id), []byte(reason))
	})
}
