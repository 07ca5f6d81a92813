// Command allocsite makes a map that only an interface value in a
// channel's buffer holds (no variable names it), prints its header's
// address and waits: the crashsite test reads, from this process's
// memory, the memory profiler's record of where the map was made.
package main

import (
	"fmt"
	"reflect"
	"time"
)

var parked = make(chan any, 1)

// newLedger may be inlined into main: the runtime expands inlined frames
// in the profiled stack, and the site must still be this line.
func newLedger() map[string]int {
	return make(map[string]int) // alloc site
}

func main() {
	parked <- newLedger()
	m := <-parked
	parked <- m
	m = nil
	// Objects allocated after the map get their own profile records on
	// the span: the walk must skip the ones before and after it.
	junk := make([]*[6]uint64, 0, 64)
	for i := 0; i < 64; i++ {
		junk = append(junk, new([6]uint64))
	}
	v := <-parked
	parked <- v
	fmt.Printf("ready %#x %d\n", reflect.ValueOf(v).Pointer(), len(junk))
	for {
		time.Sleep(time.Hour)
	}
}
