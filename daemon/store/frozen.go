package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Frozen is the record of a process the daemon holds stopped.
type Frozen struct {
	PID int `json:"pid"`
	// StartTime is /proc/PID/stat's starttime (ticks); StartBoottimeNS the
	// same instant in ns as the BPF side sees it.
	StartTime       uint64    `json:"start_time"`
	StartBoottimeNS uint64    `json:"start_boottime_ns"`
	Since           time.Time `json:"since"`
	// PIDNS is the nsfs inode of the PID namespace PID is numbered in (the
	// daemon's): whoever resumes the process checks it is in the same one.
	PIDNS uint32 `json:"pid_ns,omitempty"`
}

// FrozenRecords keeps one small file per held process (PID.json) in a
// directory of the runtime directory, not in the bbolt file: writing,
// listing and removing a record never waits for the database nor depends
// on it opening, so a full, read-only or corrupt state disk never blocks
// the resumption of what a dead daemon left stopped.
//
// Records are written without fsync, deliberately: a record matters only
// while its process is stopped, and the page cache survives every death of
// the daemon (SIGKILL, OOM, panic); what fsync protects against — power
// loss, a kernel crash — ends the stopped process too. Under systemd the
// runtime directory is a tmpfs, where fsync is a no-op anyway.
type FrozenRecords struct{ dir string }

// Bounds on what List reads back: the directory is the daemon's own, but
// a record is still input from disk.
const (
	maxFrozenRecords = 4096
	maxFrozenRecord  = 4096 // bytes
)

// OpenFrozenRecords uses (creating) dir for frozen-process records. The
// records are usable even with an error (each Add then fails and says why).
func OpenFrozenRecords(dir string) (*FrozenRecords, error) {
	r := &FrozenRecords{dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return r, fmt.Errorf("create frozen-records dir: %w", err)
	}
	return r, nil
}

// Dir is the records' directory.
func (r *FrozenRecords) Dir() string { return r.dir }

func (r *FrozenRecords) path(pid int) string {
	return filepath.Join(r.dir, strconv.Itoa(pid)+".json")
}

// Add records that the daemon holds f stopped (replacing an older record
// of the same pid). The file appears whole or not at all (written aside,
// then renamed).
func (r *FrozenRecords) Add(f Frozen) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp := filepath.Join(r.dir, "."+strconv.Itoa(f.PID)+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write frozen record of pid %d: %w", f.PID, err)
	}
	if err := os.Rename(tmp, r.path(f.PID)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write frozen record of pid %d: %w", f.PID, err)
	}
	return nil
}

// Remove forgets the record of pid; a record that is not there is not an
// error.
func (r *FrozenRecords) Remove(pid int) error {
	if err := os.Remove(r.path(pid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove frozen record of pid %d: %w", pid, err)
	}
	return nil
}

// List returns the records, at most maxFrozenRecords of them. A malformed
// record is reported in err (joined) and removed: it cannot be acted on
// safely, and the start-up sweep of processes stopped at a crash probe
// finds its process anyway. Records read are returned even when err is
// set.
func (r *FrozenRecords) List() ([]Frozen, error) {
	d, err := os.Open(r.dir)
	if err != nil {
		return nil, fmt.Errorf("read frozen records: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(maxFrozenRecords)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read frozen records: %w", err)
	}
	var out []Frozen
	var errs []error
	for _, name := range names {
		pid, err := strconv.Atoi(strings.TrimSuffix(name, ".json"))
		if !strings.HasSuffix(name, ".json") || err != nil || pid <= 0 {
			continue // a temporary file of an interrupted Add, or not ours
		}
		f, err := readFrozen(filepath.Join(r.dir, name))
		if err == nil && f.PID != pid {
			err = fmt.Errorf("names pid %d", f.PID)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("frozen record %s: %w", name, err))
			_ = os.Remove(filepath.Join(r.dir, name))
			continue
		}
		out = append(out, f)
	}
	if len(names) == maxFrozenRecords {
		errs = append(errs, fmt.Errorf("more than %d frozen records; the rest are read after these are resumed", maxFrozenRecords))
	}
	return out, errors.Join(errs...)
}

func readFrozen(path string) (Frozen, error) {
	var f Frozen
	fd, err := os.Open(path)
	if err != nil {
		return f, err
	}
	defer fd.Close()
	b, err := io.ReadAll(io.LimitReader(fd, maxFrozenRecord+1))
	if err != nil {
		return f, err
	}
	if len(b) > maxFrozenRecord {
		return f, fmt.Errorf("longer than %d bytes", maxFrozenRecord)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, err
	}
	return f, nil
}
