package procmem

import (
	"errors"
	"os"
	"testing"
)

// An identity recorded in another PID namespace is never acted on: its PID
// here may name another process, so neither Check nor Resume may treat it
// as this one or as gone.
func TestIdentityOtherNamespace(t *testing.T) {
	own, err := OwnPIDNamespace()
	if err != nil {
		t.Fatal(err)
	}
	id, err := IdentityOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	id.PIDNS = own
	if err := id.Check(); err != nil {
		t.Fatalf("identity in its own namespace: %v", err)
	}
	id.PIDNS = own + 1
	if err := id.Check(); !errors.Is(err, ErrOtherNamespace) {
		t.Fatalf("Check of another namespace's pid: %v, want ErrOtherNamespace", err)
	}
	if err := id.Resume(); !errors.Is(err, ErrOtherNamespace) {
		t.Fatalf("Resume of another namespace's pid: %v, want ErrOtherNamespace (nothing was resumed)", err)
	}
}

func TestProcMountIsOwn(t *testing.T) {
	if err := CheckProcMount(); err != nil {
		t.Fatal(err)
	}
}
