// Command crash is a test victim: it dies the way fleet programs do, on
// purpose. Usage: crash MODE [wait]. With "wait" it blocks on a line of
// standard input after printing its identity, so a test can start it, see
// the daemon attach, then let it race. Builds with Go 1.19 to 1.27.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

var sink int

// cgoPID is set through C when built with cgo (cgo.go).
var cgoPID int

func writer(m map[int]int, w int) {
	for j := 0; ; j++ {
		m[j%1024+w<<20] = j
	}
}

func reader(m map[int]int) {
	for j := 0; ; j++ {
		sink += m[j%1024]
	}
}

func iterate(m map[int]int) {
	for {
		for k := range m {
			sink += k
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crash writes|rw|iter|unlocks|panic|ok|sleep [wait]")
		os.Exit(64)
	}
	mode := os.Args[1]
	m := make(map[int]int)
	for i := 0; i < 16; i++ {
		m[i] = i
	}
	// CRASH_IDLE_GOROUTINES=N parks N more goroutines: a big process to
	// capture (the freeze budget's benchmark uses 10,000).
	idle := make(chan struct{})
	if n, err := strconv.Atoi(os.Getenv("CRASH_IDLE_GOROUTINES")); err == nil {
		for i := 0; i < n; i++ {
			go func() { <-idle }()
		}
	}
	fmt.Printf("pid=%d map=%#x go=%s\n", os.Getpid(), *(*uintptr)(unsafe.Pointer(&m)), runtime.Version())
	if len(os.Args) > 2 && os.Args[2] == "wait" {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	switch mode {
	case "writes":
		for i := 0; i < 4; i++ {
			go writer(m, i)
		}
	case "rw":
		go writer(m, 1)
		for i := 0; i < 3; i++ {
			go reader(m)
		}
	case "iter":
		go writer(m, 1)
		for i := 0; i < 3; i++ {
			go iterate(m)
		}
	case "unlocks":
		// Two threads enter the runtime's fatal path at once ("sync:
		// unlock of unlocked mutex"), without a race to wait for.
		// Each spins on its own thread until both are running.
		var ready int32
		for i := 0; i < 2; i++ {
			go func() {
				var mu sync.Mutex
				atomic.AddInt32(&ready, 1)
				for atomic.LoadInt32(&ready) < 2 {
				}
				mu.Unlock()
			}()
		}
	case "panic":
		panic("mapsentry victim: deliberate panic")
	case "ok":
		fmt.Println("ok: finished normally")
		os.Exit(0)
	case "sleep":
		time.Sleep(time.Hour)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(64)
	}
	time.Sleep(60 * time.Second)
	fmt.Fprintln(os.Stderr, "no crash within 60s")
	os.Exit(3)
}
