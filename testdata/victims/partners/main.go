// Command partners is a test victim for naming the goroutines racing on a
// map: distinct named functions (main.writerA, main.writerB, main.reader)
// race on one map while decoy goroutines use several other maps safely.
// Usage: partners writes|rw [wait]. It prints its pid and the racing map's
// address, then (with "wait") blocks on a line of standard input so a test
// can see the daemon attach and arm before the race starts. Builds with Go
// 1.19 to 1.27.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

var sink int

//go:noinline
func writerA(m map[int]int) {
	for j := 0; ; j++ {
		m[j&1023] = j
	}
}

//go:noinline
func writerB(m map[int]int) {
	for j := 0; ; j++ {
		m[(j&1023)+1<<20] = j
	}
}

//go:noinline
func reader(m map[int]int) {
	for j := 0; ; j++ {
		sink += m[j&1023]
	}
}

// decoy uses its own maps under a lock: never a crash, but map operations
// on other maps all the time, so the map and the partners must be told
// apart from them.
//
//go:noinline
func decoy(mu *sync.Mutex, ints map[int]int, strs map[string]int) {
	keys := []string{"a", "b", "c", "d"}
	for j := 0; ; j++ {
		mu.Lock()
		ints[j&255] = j
		strs[keys[j&3]] += j
		delete(ints, (j+7)&255)
		mu.Unlock()
		if j&1023 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: partners writes|rw [wait]")
		os.Exit(64)
	}
	var mu sync.Mutex
	decoys := []map[int]int{{1: 1}, {2: 2}}
	strs := map[string]int{"x": 1}
	m := make(map[int]int)
	for i := 0; i < 64; i++ {
		m[i] = i
	}
	fmt.Printf("pid=%d map=%#x go=%s\n", os.Getpid(), *(*uintptr)(unsafe.Pointer(&m)), runtime.Version())
	if len(os.Args) > 2 && os.Args[2] == "wait" {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	for _, d := range decoys {
		go decoy(&mu, d, strs)
	}
	switch os.Args[1] {
	case "writes":
		go writerA(m)
		go writerB(m)
	case "rw":
		go writerA(m)
		go reader(m)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(64)
	}
	time.Sleep(60 * time.Second)
	fmt.Fprintln(os.Stderr, "no crash within 60s")
	os.Exit(3)
}
