// Command victim times map writes: one goroutine doing m[i&63] = i on a
// 64-entry map[uint64]uint64, exactly one runtime.mapassign_fast64 call per
// iteration (capture-facts §5's setup). Usage: victim N; prints
// "ns_per_write=X" for N writes.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

var sink map[uint64]uint64

//go:noinline
func writes(m map[uint64]uint64, n uint64) {
	for i := uint64(0); i < n; i++ {
		m[i&63] = i
	}
}

func main() {
	n, err := strconv.ParseUint(os.Args[1], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: victim N")
		os.Exit(64)
	}
	m := make(map[uint64]uint64, 64)
	writes(m, 64)
	t0 := time.Now()
	writes(m, n)
	el := time.Since(t0)
	sink = m
	fmt.Printf("ns_per_write=%.2f\n", float64(el.Nanoseconds())/float64(n))
}
