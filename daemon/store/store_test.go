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
