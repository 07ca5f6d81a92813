package capture

import (
	"fmt"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

func TestLoopBudget(t *testing.T) {
	b := newLoopBudget(LoopBudget{MaxFull: 3, Interval: time.Minute})
	t0 := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if ok, start := b.admit("a", t0.Add(time.Duration(i)*time.Second)); !ok || !start.Equal(t0) {
			t.Fatalf("crash %d of loop a: admitted=%v interval %v, want a full capture in the interval from %v", i, ok, start, t0)
		}
	}
	if ok, _ := b.admit("a", t0.Add(10*time.Second)); ok {
		t.Fatal("a fourth crash in the interval got a full capture")
	}
	if ok, _ := b.admit("b", t0.Add(10*time.Second)); !ok {
		t.Fatal("another loop was refused a full capture")
	}
	if ok, start := b.admit("a", t0.Add(time.Minute)); !ok || !start.Equal(t0.Add(time.Minute)) {
		t.Fatalf("next interval: admitted=%v start %v", ok, start)
	}
	if newLoopBudget(LoopBudget{}) != nil {
		t.Fatal("a zero budget must mean no budget")
	}
}

// TestLoopBudgetJoinsBothSides: once a capture shows the signature, the
// two crash sites of one race share one budget.
func TestLoopBudgetJoinsBothSides(t *testing.T) {
	b := newLoopBudget(LoopBudget{MaxFull: 3, Interval: time.Minute})
	t0 := time.Unix(1000, 0)
	c := &report.Crash{ID: "x", Diagnosis: &report.Diagnosis{Signature: "s1-aa"}}
	if ok, _ := b.admit("1:2/map_concurrent_write/main.deposit", t0); !ok {
		t.Fatal("first crash refused")
	}
	b.remember("1:2/map_concurrent_write/main.deposit", c)
	if ok, _ := b.admit("1:2/map_concurrent_write/main.withdraw", t0); !ok {
		t.Fatal("first crash of the other side refused")
	}
	b.remember("1:2/map_concurrent_write/main.withdraw", c)
	full := 2
	for i := 0; i < 10; i++ {
		for _, side := range []string{"main.deposit", "main.withdraw"} {
			if ok, _ := b.admit("1:2/map_concurrent_write/"+side, t0.Add(time.Second)); ok {
				full++
			}
		}
	}
	if full != 3 {
		t.Fatalf("%d full captures of one race, want 3", full)
	}
	if sig, _, id := b.last("1:2/map_concurrent_write/main.withdraw"); sig != "s1-aa" || id != "x" {
		t.Fatalf("last capture of the loop: %s %s", sig, id)
	}
}

// TestLoopBudgetStrict: crashes of a second crash site arriving before a
// capture has joined it to the signature still stay within MaxFull.
func TestLoopBudgetStrict(t *testing.T) {
	b := newLoopBudget(LoopBudget{MaxFull: 5, Interval: time.Minute})
	t0 := time.Unix(1000, 0)
	c := &report.Crash{ID: "x", Diagnosis: &report.Diagnosis{Signature: "s1-aa"}}
	full := 0
	admit := func(site string) {
		if ok, _ := b.admit("1:2/map_concurrent_write/"+site, t0); ok {
			full++
		}
	}
	admit("main.deposit")
	b.remember("1:2/map_concurrent_write/main.deposit", c)
	for i := 0; i < 3; i++ {
		admit("main.deposit")
	}
	// Withdraw's crashes come in before any of them is captured.
	for i := 0; i < 4; i++ {
		admit("main.withdraw")
	}
	b.remember("1:2/map_concurrent_write/main.withdraw", c)
	for i := 0; i < 4; i++ {
		admit("main.deposit")
		admit("main.withdraw")
	}
	if full != 5 {
		t.Fatalf("%d full captures, want 5", full)
	}
}

// The pool tells of the first hold and of the last release only, in order.
func TestPoolOnHolding(t *testing.T) {
	var got []bool
	p := newPool(1, func(any bool) { got = append(got, any) })
	for _, d := range []int{1, 1, -1, 1, -1, -1, 1, -1} {
		p.holding(d)
	}
	if want := []bool{true, false, true, false}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("onHolding calls %v, want %v", got, want)
	}
}
