package store

import (
	"errors"
	"fmt"
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
	s, err := Open(t.TempDir(), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddFrozen(Frozen{PID: 7, StartTime: 70, StartBoottimeNS: 700})
	s.AddFrozen(Frozen{PID: 8, StartTime: 80})
	s.RemoveFrozen(7)
	f, err := s.Frozen()
	if err != nil || len(f) != 1 || f[0].PID != 8 || f[0].StartTime != 80 {
		t.Fatalf("frozen records %+v, %v", f, err)
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
