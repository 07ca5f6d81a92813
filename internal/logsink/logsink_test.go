package logsink

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// Lines come out whole and in order, and Close writes out what is queued
// (and waits for the writer: out is not read before).
func TestInOrderAndFlushedAtClose(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, 1<<20)
	var want strings.Builder
	for i := 0; i < 1000; i++ {
		line := fmt.Sprintf("line %d\n", i)
		w.Write([]byte(line))
		want.WriteString(line)
	}
	w.Close(5 * time.Second)
	if got := out.String(); got != want.String() {
		t.Fatalf("output differs: %d bytes, want %d", len(got), want.Len())
	}
	if n, _ := w.Write([]byte("late\n")); n != 5 || w.Dropped() != 1 {
		t.Errorf("write after close: n=%d dropped=%d, want 5 and 1", n, w.Dropped())
	}
}

// An output nobody reads never blocks a writer: what does not fit is
// dropped, counted, and the count is written once the output moves.
func TestBlockedOutputDropsAndSays(t *testing.T) {
	r, pw := io.Pipe()
	w := New(pw, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 10000; i++ {
			w.Write([]byte(fmt.Sprintf("line %05d padding padding padding\n", i)))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on an output nobody reads")
	}
	dropped := w.Dropped()
	if dropped == 0 {
		t.Fatal("nothing dropped with 1 KiB of queue and 380 KB written")
	}
	// The output moves again: queued lines, and notices that count every
	// dropped line.
	sc := bufio.NewScanner(r)
	var lines []string
	var noticed uint64
	got := make(chan struct{})
	go func() {
		defer close(got)
		for sc.Scan() {
			l := sc.Text()
			if _, n, ok := strings.Cut(l, "lines dropped\" dropped="); ok {
				var k uint64
				fmt.Sscan(n, &k)
				if noticed += k; noticed >= dropped {
					return
				}
				continue
			}
			lines = append(lines, l)
		}
	}()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatalf("notices count %d dropped lines once the output moved, want %d", noticed, dropped)
	}
	if noticed != dropped {
		t.Errorf("notices count %d dropped lines, want %d", noticed, dropped)
	}
	if len(lines) == 0 {
		t.Error("no queued line written once the output moved")
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "line ") {
			t.Errorf("torn or foreign line %q", l)
		}
	}
	go io.Copy(io.Discard, r)
	w.Close(5 * time.Second)
}
