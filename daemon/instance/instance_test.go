package instance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// name is an instance name no other test run on this host uses.
func name(t *testing.T, suffix string) string {
	return fmt.Sprintf("test-%d-%s-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"), suffix)
}

func TestSecondOfSameInstanceRefusedWithHolder(t *testing.T) {
	n := name(t, "a")
	self := Info{PID: os.Getpid(), Instance: n, StateDir: "/state/a", Socket: "/run/a.sock", Since: time.Now()}
	l, err := Acquire(n, nil, self)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(n, nil, Info{PID: 1})
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire: %v, want a HeldError", err)
	}
	// The PID comes from the kernel (SO_PEERCRED), the rest from the holder.
	if held.PID != os.Getpid() || held.Holder == nil || held.Holder.StateDir != "/state/a" {
		t.Fatalf("holder %d %+v, want pid %d and its state dir", held.PID, held.Holder, os.Getpid())
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("pid %d", os.Getpid()), `instance "` + n + `"`, "/state/a", "config instance"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	// Another name runs beside it.
	other, err := Acquire(name(t, "b"), nil, self)
	if err != nil {
		t.Fatalf("another instance name: %v", err)
	}
	other.Close()
	// Released on Close: the next daemon starts.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Acquire(n, nil, self)
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	l.Close()
}

func TestSharedDirectoryRefusedWhateverTheInstance(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(name(t, "a"), []string{dir, dir, "", filepath.Join(dir, "missing")}, Info{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Acquire(name(t, "b"), []string{t.TempDir(), dir}, Info{})
	var held *HeldError
	if !errors.As(err, &held) || held.What != "directory "+dir {
		t.Fatalf("second Acquire on the same directory: %v", err)
	}
	// The holder of a flock is read from /proc/locks.
	if held.PID != os.Getpid() {
		t.Errorf("holder pid %d, want %d", held.PID, os.Getpid())
	}
	// The failed Acquire released its instance name.
	l2, err := Acquire(name(t, "b"), nil, Info{})
	if err != nil {
		t.Fatalf("instance b after its failed Acquire: %v", err)
	}
	l2.Close()
	if _, err := LockDirs(dir); !errors.As(err, &held) {
		t.Fatalf("LockDirs on a held directory: %v", err)
	}
}
