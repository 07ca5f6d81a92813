// Command sigvictim runs one goroutine, locked to its thread, in a tight
// loop two calls deep (main.spin -> main.inner) after having parked once,
// so that its saved context (g.sched) is stale. It prints its thread id;
// a test then catches that thread inside the runtime's signal handler.
// Builds with Go 1.19 to 1.27.
package main

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
)

var sink int

//go:noinline
func inner(n int) int {
	for {
		n = n*31 + 7
		sink = n
	}
}

//go:noinline
func spin(ready chan<- int) {
	runtime.LockOSThread()
	time.Sleep(10 * time.Millisecond) // park once: g.sched is now stale
	ready <- syscall.Gettid()
	inner(1)
}

func main() {
	ready := make(chan int)
	go spin(ready)
	fmt.Printf("pid=%d tid=%d\n", os.Getpid(), <-ready)
	time.Sleep(time.Hour)
}
