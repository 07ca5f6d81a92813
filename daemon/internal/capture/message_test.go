package capture

import (
	"os"
	"testing"
	"unsafe"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/probes"
)

// testMessage is a string constant of this test binary, as the runtime's
// fatal messages are of theirs.
const testMessage = "concurrent map writes (a constant in the test binary)"

// When the probe could not copy the message (its page not yet mapped) and
// the process is gone before the capture reads it, the message still comes
// from the binary: it is a constant there.
func TestReadMessageFromBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := probes.Inspect(exe)
	if err != nil {
		t.Fatalf("this test binary, a Go binary, not inspectable: %v", err)
	}
	defer bin.Close()
	if bin.PIE {
		testenv.Unavailable(t, "test binary is PIE (-buildmode=pie): its constants are not at link addresses")
	}
	s := testMessage
	ev := bpf.Event{MsgPtr: uint64(uintptr(unsafe.Pointer(unsafe.StringData(s)))), MsgLen: uint64(len(s))}
	got, err := readMessage(&ev, nil, bin, 0)
	if err != nil || got != testMessage {
		t.Fatalf("message %q, %v", got, err)
	}
	// Not in the binary (a heap address) and no process: an error, not
	// bytes from somewhere else.
	ev.MsgPtr = 0xc000010000
	if got, err := readMessage(&ev, nil, bin, 0); err == nil || got != "" {
		t.Fatalf("heap message without a process: %q, %v", got, err)
	}
	// No binary either: still no panic.
	if _, err := readMessage(&ev, nil, nil, 0); err == nil {
		t.Fatal("no error without process or binary")
	}
}
