package capture

import (
	"errors"
	"strings"
	"testing"
)

func TestGuardTurnsPanicIntoError(t *testing.T) {
	err := guard("map", func() error {
		var b []byte
		_ = b[3] // index out of range, as a decoder bug would
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "stage map panicked") {
		t.Fatalf("guard = %v, want a stage panic error", err)
	}
	want := errors.New("plain")
	if err := guard("x", func() error { return want }); err != want {
		t.Fatalf("guard passed %v, want %v", err, want)
	}
}
