package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mapsentry/mapsentry/report"
)

// Crash-loop summaries: a crash the capture's loop budget did not capture
// in full is counted here, one record per loop and interval, so a
// crash-looping service costs the disk one small record a minute, not a
// report per crash. Keys are "interval start (16 hex digits of Unix ns)
// \x00 loop key": oldest first.
var bucketLoops = []byte("loops")

// maxLoopRecords bounds the summaries kept; the oldest go first.
const maxLoopRecords = 4096

// LoopSummary counts the crashes of one loop (same binary, same crash
// site) in one interval that got no full capture.
type LoopSummary struct {
	Key        string      `json:"key"`
	Interval   time.Time   `json:"interval"`
	Signature  string      `json:"signature"`
	Title      string      `json:"title,omitempty"`
	Kind       report.Kind `json:"kind"`
	Exe        string      `json:"exe"`
	GoVersion  string      `json:"go_version,omitempty"`
	BuildID    string      `json:"build_id,omitempty"`
	Suppressed int         `json:"suppressed"`
	First      time.Time   `json:"first"`
	Last       time.Time   `json:"last"`
	PIDs       []int       `json:"pids,omitempty"`
	// ExampleID is a full report of the same loop, when one was stored.
	ExampleID string `json:"example_id,omitempty"`
}

const maxLoopPIDs = 16

// AddSuppressed counts one crash into its loop's summary for the interval.
func (s *Store) AddSuppressed(one LoopSummary, pid int, at time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketLoops)
		if err != nil {
			return err
		}
		key := []byte(fmt.Sprintf("%016x\x00%s", uint64(one.Interval.UnixNano()), one.Key))
		l := one
		if v := b.Get(key); v != nil {
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("decode loop summary %q: %w", key, err)
			}
			if one.Signature != "" {
				l.Signature, l.Title, l.ExampleID = one.Signature, one.Title, one.ExampleID
			}
		} else {
			l.Suppressed, l.First, l.PIDs = 0, at, nil
		}
		l.Suppressed++
		l.Last = at
		if len(l.PIDs) < maxLoopPIDs {
			l.PIDs = append(l.PIDs, pid)
		}
		v, err := json.Marshal(l)
		if err != nil {
			return err
		}
		if err := b.Put(key, v); err != nil {
			return err
		}
		n := b.Stats().KeyN + 1
		c := b.Cursor()
		for k, _ := c.First(); k != nil && n > maxLoopRecords; k, _ = c.First() {
			if err := b.Delete(k); err != nil {
				return err
			}
			n--
		}
		return nil
	})
}

// Loops returns the crash-loop summaries, oldest first.
func (s *Store) Loops() ([]LoopSummary, error) {
	var out []LoopSummary
	err := s.db.View(func(tx *bolt.Tx) error {
		return forEachLoop(tx, func(l LoopSummary) { out = append(out, l) })
	})
	return out, err
}

func forEachLoop(tx *bolt.Tx, fn func(LoopSummary)) error {
	b := tx.Bucket(bucketLoops)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		var l LoopSummary
		if err := json.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("decode loop summary %q: %w", k, err)
		}
		fn(l)
		return nil
	})
}
