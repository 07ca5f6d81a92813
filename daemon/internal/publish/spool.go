package publish

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

var (
	errSpoolFull = errors.New("spool full (store.spool_max_files or store.spool_max_bytes)")
	errSpoolOff  = errors.New("spool disabled (store.spool_max_files or store.spool_max_bytes is 0)")
)

// maxSpoolScan bounds the directory entries read when the spool is opened
// (the directory is the daemon's own; this only keeps a mistake bounded).
const maxSpoolScan = 100_000

// spool keeps reports the store cannot take, one file each (ID.json,
// written aside and renamed into place, fsynced: it is there to outlive
// the daemon). Its bounds are its own (files, bytes). Only the publisher's
// writer adds and removes; API readers read concurrently.
type spool struct {
	dir      string
	maxFiles int
	maxBytes int64

	mu    sync.Mutex
	ready bool
	files map[string]int64 // id -> bytes
	bytes int64
}

func newSpool(dir string, maxFiles int, maxBytes int64) *spool {
	return &spool{dir: dir, maxFiles: maxFiles, maxBytes: maxBytes, files: map[string]int64{}}
}

func (s *spool) path(id string) string { return filepath.Join(s.dir, id+".json") }

// validID keeps an id usable as a file name. Report ids are hex.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// load creates the directory and indexes what a previous run left in it.
// It is retried on every use until it succeeds.
func (s *spool) load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready {
		return nil
	}
	if s.maxFiles == 0 || s.maxBytes == 0 {
		return errSpoolOff
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create spool %s: %w", s.dir, err)
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("open spool %s: %w", s.dir, err)
	}
	defer d.Close()
	ents, err := d.ReadDir(maxSpoolScan)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read spool %s: %w", s.dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(s.dir, name)) // an interrupted write
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || !validID(id) || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		s.files[id] = info.Size()
		s.bytes += info.Size()
	}
	s.ready = true
	return nil
}

// put writes (replacing) the report id.
func (s *spool) put(id string, data []byte) error {
	if !validID(id) {
		return fmt.Errorf("report id %q cannot name a spool file", id)
	}
	if err := s.load(); err != nil {
		return err
	}
	s.mu.Lock()
	old, had := s.files[id]
	n := len(s.files)
	if !had {
		n++
	}
	full := n > s.maxFiles || s.bytes-old+int64(len(data)) > s.maxBytes
	s.mu.Unlock()
	if full {
		return errSpoolFull
	}
	tmp := filepath.Join(s.dir, "."+id+".tmp")
	if err := writeSynced(tmp, data); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("spool report %s: %w", id, err)
	}
	if err := os.Rename(tmp, s.path(id)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("spool report %s: %w", id, err)
	}
	s.mu.Lock()
	s.files[id] = int64(len(data))
	s.bytes += int64(len(data)) - old
	s.mu.Unlock()
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func (s *spool) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.files[id]
	return ok
}

// get reads the report id; os.ErrNotExist when the spool has none.
func (s *spool) get(id string) ([]byte, error) {
	if !s.has(id) {
		return nil, os.ErrNotExist
	}
	f, err := os.Open(s.path(id))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, s.maxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > s.maxBytes {
		return nil, fmt.Errorf("spooled report %s is larger than the spool (%d bytes)", id, s.maxBytes)
	}
	return b, nil
}

// remove forgets the report id (moved into the store, or deleted).
func (s *spool) remove(id string) error {
	if !s.has(id) {
		return nil
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove spooled report %s: %w", id, err)
	}
	s.forget(id)
	return nil
}

func (s *spool) forget(id string) {
	s.mu.Lock()
	s.bytes -= s.files[id]
	delete(s.files, id)
	s.mu.Unlock()
}

// quarantine sets aside a file that cannot be read back as ID.json.bad:
// kept for a human, out of the spool's way and bounds.
func (s *spool) quarantine(id string) {
	_ = os.Rename(s.path(id), s.path(id)+".bad")
	s.forget(id)
}

// ids lists the spooled reports, oldest first (ids are time-ordered).
func (s *spool) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.files))
}

func (s *spool) usage() (files int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files), s.bytes
}
