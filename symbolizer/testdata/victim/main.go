// Command victim parks goroutines in known states so that the symbolizer's
// goroutine dump can be compared with the runtime's own traceback.
//
// Usage: victim N   (N goroutines in total, spread over the states below).
// It prints "ready PID" on stdout once every goroutine is in place, then
// waits forever (SIGQUIT with GOTRACEBACK=all prints the runtime's dump).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	never   = make(chan int)
	never2  = make(chan string)
	mu      sync.Mutex
	started sync.WaitGroup
	spin    atomic.Int64
	pipeR   int
)

//go:noinline
func chanRecv() {
	started.Done()
	<-never
}

//go:noinline
func selectWait() {
	started.Done()
	select {
	case <-never:
	case <-never2:
	}
}

//go:noinline
func sleeper() {
	started.Done()
	time.Sleep(time.Hour)
}

//go:noinline
func mutexWait() {
	started.Done()
	mu.Lock()
	mu.Unlock()
}

//go:noinline
func syscallRead() {
	var b [1]byte
	started.Done()
	syscall.Read(pipeR, b[:])
}

// inlinedHelper is small enough to be inlined into chanRecvInl, so the
// dump must show an inlined frame.
func inlinedHelper(c chan int) int {
	return <-c
}

//go:noinline
func chanRecvInl() {
	started.Done()
	inlinedHelper(never)
}

//go:noinline
func busy() {
	started.Done()
	for {
		spin.Add(1)
	}
}

func main() {
	n := 10
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		panic(err)
	}
	pipeR = p[0]
	mu.Lock()
	// Busy goroutines: more than GOMAXPROCS-1 so that some run and some
	// wait runnable.
	nbusy := runtime.GOMAXPROCS(0) + 1
	kinds := []func(){chanRecv, selectWait, sleeper, mutexWait, chanRecvInl}
	started.Add(n + nbusy + 2)
	go syscallRead()
	go syscallRead()
	for i := 0; i < nbusy; i++ {
		go busy()
	}
	for i := 0; i < n; i++ {
		go kinds[i%len(kinds)]()
	}
	started.Wait()
	time.Sleep(200 * time.Millisecond) // let blocked goroutines park
	fmt.Printf("ready %d\n", os.Getpid())
	select {}
}
