//go:build linux

package bpf

import (
	"testing"
	"unsafe"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// The records are read as raw map values: the Go structs must match the C.
func TestMapOpLayout(t *testing.T) {
	if MapOpSize != 5*8+4*4 {
		t.Fatalf("MapOp is %d bytes, C struct mapop is %d", MapOpSize, 5*8+4*4)
	}
	if s := unsafe.Sizeof(mapopsMapopWkey{}); s != 16 {
		t.Fatalf("mapop_wkey is %d bytes, want 16", s)
	}
	if s := unsafe.Sizeof(mapopsMapopWriters{}); s != 8+MapOpWriters*uintptr(MapOpSize) {
		t.Fatalf("mapop_writers is %d bytes", s)
	}
	c := MapOpCookie(7, MapIter24|Caller2, MapOpIterNext)
	if c>>32 != 7 || (c>>16)&0xffff != 0 || (c>>8)&0xff != MapIter24|Caller2 || c&0xff != MapOpIterNext {
		t.Fatalf("cookie %#x", c)
	}
}

// The flight recorder must pass the verifier; with nothing attached it has
// no links and no records.
func TestMapOpsLoad(t *testing.T) {
	testenv.RequirePrivileged(t)
	m, err := LoadMapOps()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if n, err := m.KernelLinks(); err != nil || n != 0 {
		t.Fatalf("links of a fresh program: %d, %v", n, err)
	}
	if _, ok, err := m.ThreadOp(1); ok || err != nil {
		t.Fatalf("thread op of pid 1: %v %v", ok, err)
	}
	if w, err := m.Writers(1, 0x1000); len(w) != 0 || err != nil {
		t.Fatalf("writers: %v %v", w, err)
	}
}
