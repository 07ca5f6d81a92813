package report

import (
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		msg, fn string
		want    Kind
	}{
		{"concurrent map writes", "runtime.fatal", KindMapConcurrentWrite},
		{"small map with no empty slot (concurrent map writes?)", "runtime.fatal", KindMapConcurrentWrite},
		{"concurrent map read and map write", "runtime.fatal", KindMapReadWrite},
		{"concurrent map iteration and map write", "runtime.fatal", KindMapIterationWrite},
		{"concurrent map clone and map write", "runtime.fatal", KindMapCloneWrite},
		{"all goroutines are asleep - deadlock!", "runtime.fatal", KindOtherFatal},
		{"bad map state", "runtime.throw", KindMapCorrupted},
		{"bad evacuatedN", "runtime.throw", KindMapCorrupted},
		{"unexpected signal during runtime execution", "runtime.throw", KindThrow},
		{"panic: boom", "runtime.fatalpanic", KindUnrecoveredPanic},
	} {
		if got := Classify(c.msg, c.fn); got != c.want {
			t.Errorf("Classify(%q, %s) = %s, want %s", c.msg, c.fn, got, c.want)
		}
	}
}

func TestNewIDOrdered(t *testing.T) {
	t0 := time.Now()
	a, b := NewID(t0), NewID(t0.Add(time.Nanosecond))
	if len(a) != 24 || !(a < b) {
		t.Fatalf("ids %q, %q: want 24 chars, time-ordered", a, b)
	}
}
