package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

func crash(t time.Time, pid int) *report.Crash {
	return &report.Crash{Schema: report.Schema, ID: report.NewID(t), CapturedAt: t, Process: report.Process{PID: pid}}
}

func TestCrashesNewestFirstAndRetention(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for i := 0; i < 5; i++ {
		if err := s.PutCrash(crash(t0.Add(time.Duration(i)*time.Second), 100+i)); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := s.Crashes(10)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, c := range cs {
		pids = append(pids, c.Process.PID)
	}
	if fmt.Sprint(pids) != "[104 103 102]" {
		t.Fatalf("stored pids %v, want newest three [104 103 102]", pids)
	}
	if _, err := s.Crash("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	st := 2
	if err := s.UpdateCrash(cs[0].ID, func(c *report.Crash) { c.Freeze.ExitStatus = &st }); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Durable across reopen.
	s, err = Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.Crash(cs[0].ID)
	if err != nil || c.Freeze.ExitStatus == nil || *c.Freeze.ExitStatus != 2 {
		t.Fatalf("after reopen: %+v, %v", c, err)
	}
}

func TestFrozenRecords(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "frozen")
	r, err := OpenFrozenRecords(dir)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().Truncate(time.Millisecond)
	for _, f := range []Frozen{{PID: 7, StartTime: 70, StartBoottimeNS: 700, Since: since}, {PID: 8, StartTime: 80}} {
		if err := r.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Remove(7); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(7); err != nil {
		t.Fatalf("removing a record that is gone: %v", err)
	}
	// What a daemon killed mid-Add leaves, a stranger's file, a record
	// that is not one: the first two ignored, the last reported and removed.
	os.WriteFile(filepath.Join(dir, ".9.tmp"), []byte(`{"pid":9`), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "10.json"), []byte("garbage"), 0o600)
	os.WriteFile(filepath.Join(dir, "11.json"), []byte(`{"pid":12}`), 0o600)
	// A fresh reader (the next daemon, resume-frozen) sees the same.
	r2, _ := OpenFrozenRecords(dir)
	f, err := r2.List()
	if len(f) != 1 || f[0].PID != 8 || f[0].StartTime != 80 {
		t.Fatalf("frozen records %+v, want pid 8 only", f)
	}
	if err == nil || !strings.Contains(err.Error(), "10.json") || !strings.Contains(err.Error(), "names pid 12") {
		t.Fatalf("malformed records not reported: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "10.json")); !os.IsNotExist(err) {
		t.Errorf("malformed record kept: %v", err)
	}
	if f, err := r2.List(); err != nil || len(f) != 1 {
		t.Fatalf("second List: %+v, %v", f, err)
	}
}

// TestFrozenRecordsNeedNoStore: the records live outside the bbolt file,
// so a store that cannot be opened does not hide them.
func TestFrozenRecordsNeedNoStore(t *testing.T) {
	state := t.TempDir()
	// A directory where the database file should be: Open fails.
	os.Mkdir(filepath.Join(state, "mapsentry.db"), 0o700)
	if _, err := Open(state, 10); err == nil {
		t.Fatal("store opened over a directory")
	}
	r, _ := OpenFrozenRecords(filepath.Join(t.TempDir(), "frozen"))
	r.Add(Frozen{PID: 5, StartTime: 50})
	if f, err := r.List(); err != nil || len(f) != 1 {
		t.Fatalf("records with a broken store: %+v, %v", f, err)
	}
}

// TestPutIsIdempotentAndMerges: a report stored again under its id is one
// report, queued for export once, and keeps the exit status and late
// events the stored copy had gained.
func TestPutIsIdempotentAndMerges(t *testing.T) {
	s, err := Open(t.TempDir(), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := crash(time.Now(), 42)
	c.Fatal.Events = []report.Event{{TID: 42, KTimeNS: 1}}
	first, _ := json.Marshal(c)
	if created, err := s.Put(c.ID, first); err != nil || !created {
		t.Fatalf("first Put: created %v, %v", created, err)
	}
	st := 2
	if err := s.UpdateCrash(c.ID, func(r *report.Crash) {
		r.Freeze.ExitStatus = &st
		r.Fatal.Events = append(r.Fatal.Events, report.Event{TID: 43, KTimeNS: 2, AfterRelease: true})
	}); err != nil {
		t.Fatal(err)
	}
	q := s.ExportQueue()
	q.Ack(t.Context(), c.ID)
	// The capture's final copy: more content, no exit, no late event.
	c.Freeze.Resumed = true
	c.PartnersNote = "final"
	final, _ := json.Marshal(c)
	for i := 0; i < 2; i++ {
		if created, err := s.Put(c.ID, final); err != nil || created {
			t.Fatalf("Put again: created %v, %v", created, err)
		}
	}
	got, err := s.Crash(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.PartnersNote != "final" || !got.Freeze.Resumed || got.Freeze.ExitStatus == nil || *got.Freeze.ExitStatus != 2 ||
		len(got.Fatal.Events) != 2 || got.Fatal.Events[1].TID != 43 {
		t.Fatalf("merged report: note %q resumed %v exit %v events %+v", got.PartnersNote, got.Freeze.Resumed,
			got.Freeze.ExitStatus, got.Fatal.Events)
	}
	if n, _ := s.CountCrashes(); n != 1 {
		t.Fatalf("%d crashes, want 1", n)
	}
	if n, _ := q.Len(t.Context()); n != 0 {
		t.Fatalf("an acknowledged crash stored again was queued for export again (%d pending)", n)
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir, 10); err == nil {
		t.Fatal("second open of a locked store succeeded")
	}
}

func TestExportQueue(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	q := s.ExportQueue()
	t0 := time.Now()
	a, b, unfinished := crash(t0, 1), crash(t0.Add(time.Second), 2), crash(t0.Add(2*time.Second), 3)
	st := 2
	a.Freeze.Resumed, b.Freeze.Resumed = true, true
	a.Freeze.ExitStatus, b.Freeze.ExitStatus = &st, &st
	for _, c := range []*report.Crash{a, b, unfinished} {
		if err := s.PutCrash(c); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := q.Len(ctx); n != 3 {
		t.Fatalf("Len = %d, want 3", n)
	}
	p, err := q.Pending(ctx, 10)
	if err != nil || len(p) != 2 || p[0].ID != a.ID || p[1].ID != b.ID {
		t.Fatalf("Pending = %d crashes, %v; want a, b oldest first (unfinished held back)", len(p), err)
	}
	// Resumed but its exit not seen yet: held back too (the report may
	// still gain late events and the exit status).
	noExit := crash(t0.Add(3*time.Second), 4)
	noExit.Freeze.Resumed = true
	s.PutCrash(noExit)
	if p, _ := q.Pending(ctx, 10); len(p) != 2 {
		t.Fatalf("a resumed crash without its exit was handed out: %d pending", len(p))
	}
	q.Ack(ctx, a.ID)
	q.Drop(ctx, b.ID, "max_age")
	// Re-storing an acknowledged or dropped crash does not queue it twice
	// for a dropped one; an update after ack (exit status) is not re-sent.
	s.UpdateCrash(a.ID, func(c *report.Crash) {})
	s.PutCrash(b)
	s.Close()
	s, _ = Open(dir, 100) // durable across restarts
	defer s.Close()
	q = s.ExportQueue()
	p, _ = q.Pending(ctx, 10)
	if len(p) != 0 {
		t.Fatalf("after ack/drop and reopen: %d pending, want 0 (unfinished still held back)", len(p))
	}
	if n, _ := q.Len(ctx); n != 2 {
		t.Fatalf("Len = %d, want 2 (the unfinished one and the one without exit)", n)
	}
}
