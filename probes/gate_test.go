package probes

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// An exec of a file rewritten in place waits past the gate's deadline
// while the probes of the file's old contents are still in the kernel,
// and is answered once they are gone and its own probes are in (or one
// more deadline later); any other exec is not held longer.
func TestExecHeldWhileOldProbesDetach(t *testing.T) {
	m := NewManager(nil, Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	g := &gate{m: m, deadline: 20 * time.Millisecond, closed: true} // closed: answers write nothing
	key := FileKey{Dev: 1, Ino: 2}
	oldGen, newGen := FileGen{Size: 1}, FileGen{Size: 2}
	w := &watched{id: 1, bin: &Binary{Key: key, Gen: oldGen}, attached: 3}
	m.bins[key] = w

	// Another file, or the same contents: no extra hold.
	for _, c := range []struct {
		key FileKey
		gen FileGen
	}{{FileKey{Dev: 1, Ino: 3}, newGen}, {key, oldGen}} {
		g.holdPastStale(&heldExec{g: g, at: time.Now()}, c.key, c.gen)
		if n := g.staleHeld.Load(); n != 0 {
			t.Errorf("exec of %+v held past the deadline with no stale probes", c)
		}
	}

	// Rewritten: held while the old binary is watched, then forgotten and
	// detaching; released one deadline after the detach ends.
	h := &heldExec{g: g, at: time.Now()}
	done := make(chan time.Time)
	go func() { g.holdPastStale(h, key, newGen); done <- time.Now() }()
	time.Sleep(30 * time.Millisecond)
	m.mu.Lock()
	m.forget(key, w)
	m.mu.Unlock()
	time.Sleep(30 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("exec let go while the old probes were still being detached")
	default:
	}
	detached := time.Now()
	m.mu.Lock()
	if w.forgotten {
		w.forgotten = false
		m.detaching[key]--
		delete(m.detaching, key)
	}
	m.mu.Unlock()
	select {
	case end := <-done:
		if d := end.Sub(detached); d < g.deadline {
			t.Errorf("after the old probes were gone the exec waited %s, not the new probes' deadline (%s)", d, g.deadline)
		}
	case <-time.After(2 * replaceWait):
		t.Fatal("exec never let go after the old probes were gone")
	}
	if g.staleHeld.Load() != 1 {
		t.Errorf("held_past_deadline %d, want 1", g.staleHeld.Load())
	}

	// Bounded: stale probes that never go keep it replaceWait at most.
	m.detaching[key] = 1
	h = &heldExec{g: g, at: time.Now().Add(-replaceWait + 30*time.Millisecond)}
	go func() { g.holdPastStale(h, key, newGen); done <- time.Now() }()
	select {
	case <-done:
	case <-time.After(replaceWait):
		t.Fatal("held on past replaceWait from the exec")
	}
}
