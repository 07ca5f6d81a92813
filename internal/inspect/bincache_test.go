package inspect

import (
	"os"
	"testing"
)

func TestBinCacheSharesAndReleases(t *testing.T) {
	exe, err := os.Executable() // this test binary: a Go binary
	if err != nil {
		t.Fatal(err)
	}
	var c binCache
	a, relA, err := c.get(exe)
	if err != nil {
		t.Fatal(err)
	}
	b, relB, err := c.get(exe)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("the same file was inspected twice")
	}
	relA()
	c.close() // evicted while b is in use: still usable
	if _, ok := b.Table.LookupFunc("main.main"); !ok {
		t.Fatal("binary closed while in use")
	}
	relB()
	if len(c.entries) != 0 {
		t.Fatalf("%d entries after close", len(c.entries))
	}
	d, relD, err := c.get(exe) // after close: inspected again, not cached
	if err != nil || d == a {
		t.Fatalf("after close: %v, same binary %v", err, d == a)
	}
	relD()
	if _, _, err := c.get("/nonexistent/binary"); err == nil {
		t.Fatal("a missing file inspected")
	}
}
