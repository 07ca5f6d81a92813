// Package store owns the daemon's durable state in one embedded bbolt file
// under the state directory: crash reports (keyed by their time-ordered id)
// and the records of processes currently frozen, which let a restarted
// daemon resume anything a dead one left stopped.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mapsentry/mapsentry/report"
)

// ErrNotFound is returned for an unknown crash id.
var ErrNotFound = errors.New("not found")

var (
	bucketCrashes = []byte("crashes")
	bucketFrozen  = []byte("frozen")
)

// Frozen is the durable record of a process the daemon has stopped.
type Frozen struct {
	PID int `json:"pid"`
	// StartTime is /proc/PID/stat's starttime (ticks); StartBoottimeNS the
	// same instant in ns as the BPF side sees it.
	StartTime       uint64    `json:"start_time"`
	StartBoottimeNS uint64    `json:"start_boottime_ns"`
	Since           time.Time `json:"since"`
}

// Store is the open database.
type Store struct {
	db     *bolt.DB
	retain int
}

// Open opens (creating) dir/mapsentry.db. retain bounds stored crashes.
func Open(dir string, retain int) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	path := filepath.Join(dir, "mapsentry.db")
	db, err := bolt.Open(path, 0o640, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another mapsentry daemon", path)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCrashes, bucketFrozen} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init store: %w", err)
	}
	return &Store{db: db, retain: retain}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// PutCrash stores c (durably: bbolt syncs on commit), dropping the oldest
// crashes beyond the retention limit.
func (s *Store) PutCrash(c *report.Crash) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode crash %s: %w", c.ID, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketCrashes)
		if err := bk.Put([]byte(c.ID), b); err != nil {
			return fmt.Errorf("store crash %s: %w", c.ID, err)
		}
		if err := s.markPending(tx, c.ID); err != nil {
			return fmt.Errorf("queue crash %s for export: %w", c.ID, err)
		}
		// Stats().KeyN does not see keys written in this transaction, so
		// count with the cursor; ids are time-ordered, oldest first.
		n := 0
		cur := bk.Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			n++
		}
		for k, _ := cur.First(); k != nil && n > s.retain; k, _ = cur.First() {
			if err := bk.Delete(k); err != nil {
				return err
			}
			n--
		}
		return nil
	})
}

// UpdateCrash applies fn to a stored crash in one transaction.
func (s *Store) UpdateCrash(id string, fn func(*report.Crash)) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketCrashes)
		v := bk.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("crash %s: %w", id, ErrNotFound)
		}
		var c report.Crash
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("decode crash %s: %w", id, err)
		}
		fn(&c)
		b, err := json.Marshal(&c)
		if err != nil {
			return err
		}
		return bk.Put([]byte(id), b)
	})
}

// Crash returns one crash by id.
func (s *Store) Crash(id string) (*report.Crash, error) {
	var c report.Crash
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCrashes).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("crash %s: %w", id, ErrNotFound)
		}
		return json.Unmarshal(v, &c)
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// Crashes returns up to limit crashes, newest first.
func (s *Store) Crashes(limit int) ([]report.Crash, error) {
	out := []report.Crash{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCrashes).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var cr report.Crash
			if err := json.Unmarshal(v, &cr); err != nil {
				return fmt.Errorf("decode crash %s: %w", k, err)
			}
			out = append(out, cr)
		}
		return nil
	})
	return out, err
}

// CountCrashes returns how many crashes are stored.
func (s *Store) CountCrashes() (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketCrashes).Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// AddFrozen records that the daemon holds f stopped.
func (s *Store) AddFrozen(f Frozen) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFrozen).Put([]byte(strconv.Itoa(f.PID)), b)
	})
}

// RemoveFrozen forgets the frozen record of pid.
func (s *Store) RemoveFrozen(pid int) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFrozen).Delete([]byte(strconv.Itoa(pid)))
	})
}

// Frozen lists the frozen records.
func (s *Store) Frozen() ([]Frozen, error) {
	var out []Frozen
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFrozen).ForEach(func(k, v []byte) error {
			var f Frozen
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("decode frozen record %s: %w", k, err)
			}
			out = append(out, f)
			return nil
		})
	})
	return out, err
}
