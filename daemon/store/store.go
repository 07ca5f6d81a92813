// Package store owns the daemon's durable state: crash reports (keyed by
// their time-ordered id) and their export queue in one embedded bbolt file
// under the state directory, and — outside that file, one small file each
// under the runtime directory (frozen.go) — the records of processes
// currently frozen, which let a restarted daemon resume anything a dead one
// left stopped even when the bbolt file cannot be opened.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mapsentry/mapsentry/report"
)

// ErrNotFound is returned for an unknown crash id.
var ErrNotFound = errors.New("not found")

var bucketCrashes = []byte("crashes")

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
	var db *bolt.DB
	err := guard(func() (err error) {
		db, err = bolt.Open(path, 0o640, &bolt.Options{Timeout: 2 * time.Second})
		return err
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another mapsentry daemon", path)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, retain: retain}
	err = s.update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketCrashes)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return s, nil
}

// guard runs one bbolt call. bbolt reads its file through mmap, so an I/O
// error on a page (a failing disk, a file truncated under us) arrives as
// SIGBUS, which would kill the daemon and with it every freeze it holds;
// SetPanicOnFault turns it into a panic of this goroutine, recovered here
// as an error. Any other panic is not ours to hide.
func guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(interface{ Addr() uintptr })
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("store file unreadable (fault at %#x): %v", f.Addr(), r)
		}
	}()
	return fn()
}

func (s *Store) update(fn func(*bolt.Tx) error) error {
	return guard(func() error { return s.db.Update(fn) })
}

func (s *Store) view(fn func(*bolt.Tx) error) error {
	return guard(func() error { return s.db.View(fn) })
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// PutCrash stores c; see Put.
func (s *Store) PutCrash(c *report.Crash) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode crash %s: %w", c.ID, err)
	}
	_, err = s.Put(c.ID, b)
	return err
}

// Put stores the JSON report data under id (durably: bbolt syncs on
// commit), idempotent by id. The first Put of an id queues it for export
// and drops the oldest crashes beyond the retention limit; a later Put of
// the same id replaces the stored report merged with it (Merge) and does
// not queue it again, so a report moved in twice (from the spool, after a
// daemon died between the commit and removing the spool file) is one
// report and one export. created says the id was new.
func (s *Store) Put(id string, data []byte) (created bool, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketCrashes)
		if old := bk.Get([]byte(id)); old != nil {
			merged, err := MergeJSON(old, data)
			if err != nil {
				return fmt.Errorf("merge crash %s: %w", id, err)
			}
			if err := indexJSON(tx, id, merged); err != nil {
				return err
			}
			return bk.Put([]byte(id), merged)
		}
		created = true
		if err := bk.Put([]byte(id), data); err != nil {
			return fmt.Errorf("store crash %s: %w", id, err)
		}
		if err := s.markPending(tx, id); err != nil {
			return fmt.Errorf("queue crash %s for export: %w", id, err)
		}
		if err := indexJSON(tx, id, data); err != nil {
			return err
		}
		// Stats().KeyN does not see keys written in this transaction, so
		// count with the cursor; ids are time-ordered, oldest first.
		n := 0
		cur := bk.Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			n++
		}
		for k, _ := cur.First(); k != nil && n > s.retain; k, _ = cur.First() {
			if err := unindex(tx, k); err != nil {
				return err
			}
			if err := bk.Delete(k); err != nil {
				return err
			}
			n--
		}
		return nil
	})
	return created, err
}

// UpdateCrash applies fn to a stored crash in one transaction.
func (s *Store) UpdateCrash(id string, fn func(*report.Crash)) error {
	return s.update(func(tx *bolt.Tx) error {
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
		if err := index(tx, &c); err != nil {
			return fmt.Errorf("index crash %s: %w", id, err)
		}
		return bk.Put([]byte(id), b)
	})
}

// Crash returns one crash by id.
func (s *Store) Crash(id string) (*report.Crash, error) {
	var c report.Crash
	err := s.view(func(tx *bolt.Tx) error {
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
	err := s.view(func(tx *bolt.Tx) error {
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
	err := s.view(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketCrashes).Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			n++
		}
		return nil
	})
	return n, err
}
