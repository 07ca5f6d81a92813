package procmem

import (
	"errors"
	"os"
	"testing"
)

func TestParseStat(t *testing.T) {
	line := "1234 (weird) name (x)) T 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 7 0 98765 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	s, err := ParseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.PID != 1234 || s.Comm != "weird) name (x)" || s.State != 'T' || s.PPID != 1 || s.Threads != 7 || s.StartTime != 98765 {
		t.Fatalf("parsed %+v", s)
	}
	for _, bad := range []string{"", "1234", "1234 (x", "x (y) R", "1 (a) R 1 2"} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) accepted", bad)
		}
	}
}

func TestIdentitySelf(t *testing.T) {
	id, err := IdentityOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Check(); err != nil {
		t.Fatal(err)
	}
	other := id
	other.StartTime++
	if err := other.Check(); err == nil {
		t.Fatal("identity with another start time accepted")
	}
	if err := other.Resume(); !errors.Is(err, ErrGone) {
		t.Fatalf("resume of a gone identity: %v, want ErrGone (nothing was resumed)", err)
	}
}
