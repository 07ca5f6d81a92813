// Command diagnose is a test victim for naming the crashing map and the
// code paths and goroutines that hold it. Usage: diagnose MODE [wait].
// It prints its pid and the racing map's address, then (with "wait")
// blocks on a line of standard input so a test can see the daemon attach
// first. Builds with Go 1.19 to 1.27.
//
// Modes: global (package-level map, two named writers), global2 (another
// race in the same binary), local (a map held only in locals and
// arguments), field (a map in a struct field reached through a local
// pointer), syncmap (a map stored in a package-level sync.Map), holders
// (three maps, two writers, one reader that only holds the racing map),
// gosched-ww, gosched-rw, gosched-iw (each side yields after every access,
// so the other is usually parked, not in map code, when one crashes),
// gosched-closure-ww, -rw, -iw (the same, written as closures),
// gosched-deep-ww (yielding below an 8 KiB frame), anon (a map only an
// interface in a slice holds, no variable names it, made with every
// allocation profiled: its allocation site is what names it); any
// mode with -late races 50 ms after start.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"
)

var sink int

// build is set with -ldflags=-X main.build=N to make a rebuilt copy.
var build = "1"

// ledger is the package-level map of mode global.
var ledger map[int]int

//go:noinline
func deposit() {
	for j := 0; ; j++ {
		ledger[j&1023] = j
	}
}

//go:noinline
func withdraw() {
	for j := 0; ; j++ {
		ledger[(j&1023)+1<<20] = -j
	}
}

// stats is the package-level map of mode global2.
var stats map[string]int

//go:noinline
func countHits(keys []string) {
	for j := 0; ; j++ {
		stats[keys[j&7]] = j
	}
}

//go:noinline
func countMisses(keys []string) {
	for j := 0; ; j++ {
		stats[keys[(j&7)+8]] = j
	}
}

//go:noinline
func credit(accounts map[int]int) {
	for j := 0; ; j++ {
		accounts[j&1023] = j
	}
}

//go:noinline
func debit(accounts map[int]int) {
	for j := 0; ; j++ {
		accounts[(j&1023)+1<<20] = -j
	}
}

type server struct {
	name     string
	hits     int
	sessions map[int]int
}

//go:noinline
func (s *server) login() {
	for j := 0; ; j++ {
		s.sessions[j&1023] = j
		s.hits++
	}
}

//go:noinline
func (s *server) logout() {
	for j := 0; ; j++ {
		s.sessions[(j&1023)+1<<20] = j
	}
}

// registry stores maps as values: sync.Map guards its entries, not them.
var registry sync.Map

//go:noinline
func fillEven() {
	v, _ := registry.Load("accounts")
	m := v.(map[int]int)
	for j := 0; ; j++ {
		m[(j&1023)*2] = j
	}
}

//go:noinline
func fillOdd() {
	v, _ := registry.Load("accounts")
	m := v.(map[int]int)
	for j := 0; ; j++ {
		m[(j&1023)*2+1] = j
	}
}

//go:noinline
func writerX(m map[int]int) {
	for j := 0; ; j++ {
		m[j&1023] = j
	}
}

//go:noinline
func writerY(m map[int]int) {
	for j := 0; ; j++ {
		m[(j&1023)+1<<20] = j
	}
}

// keeper reads the map once and then only holds it, blocked.
//
//go:noinline
func keeper(m map[int]int, wait chan int) {
	sink += len(m)
	<-wait
	sink += len(m)
}

// decoy holds other maps, under a lock.
//
//go:noinline
func decoy(mu *sync.Mutex, m map[int]int) {
	for j := 0; ; j++ {
		mu.Lock()
		m[j&255] = j
		mu.Unlock()
		if j&1023 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

//go:noinline
func yieldWriterA(m map[int]int) {
	for j := 0; ; j++ {
		m[j&1023] = j
		runtime.Gosched()
	}
}

//go:noinline
func yieldWriterB(m map[int]int) {
	for j := 0; ; j++ {
		m[(j&1023)+1<<20] = j
		runtime.Gosched()
	}
}

//go:noinline
func yieldReader(m map[int]int) {
	for j := 0; ; j++ {
		sink += m[j&1023]
		runtime.Gosched()
	}
}

//go:noinline
func yieldIterator(m map[int]int) {
	for {
		for k := range m {
			sink += k
			runtime.Gosched()
		}
	}
}

// deepYield yields below an 8 KiB frame: the caller's frame, which holds
// the map, is then more than 4 KiB above the parked goroutine's SP.
//
//go:noinline
func deepYield(n int) int {
	var pad [1024]uint64
	pad[n&1023] = uint64(n)
	runtime.Gosched()
	return int(pad[(n+1)&1023])
}

//go:noinline
func deepWriterA(m map[int]int) {
	for j := 0; ; j++ {
		m[j&1023] = j
		sink += deepYield(j)
	}
}

//go:noinline
func deepWriterB(m map[int]int) {
	for j := 0; ; j++ {
		m[(j&1023)+1<<20] = j
		sink += deepYield(j)
	}
}

func fresh() map[int]int {
	m := make(map[int]int)
	for i := 0; i < 64; i++ {
		m[i] = i
	}
	return m
}

// parked holds mode anon's map as an interface value in a slice's
// backing array: no variable's word is the map.
var parked []any

//go:noinline
func newParked() map[int]int {
	return make(map[int]int) // anon alloc site
}

//go:noinline
func anonFill() {
	for i := 0; ; i++ {
		parked[0].(map[int]int)[i&63] = i
	}
}

//go:noinline
func anonDrain() {
	for i := 0; ; i++ {
		delete(parked[0].(map[int]int), i&63)
	}
}

func addr(m map[int]int) uintptr { return *(*uintptr)(unsafe.Pointer(&m)) }

// start sets up a mode and returns the racing map's address and a
// function that starts the race. Goroutines, not main, hold the maps.
func start(mode string) (uintptr, func()) {
	switch mode {
	case "global":
		ledger = fresh()
		return addr(ledger), func() { go deposit(); go withdraw() }
	case "global2":
		stats = map[string]int{"x": 1}
		keys := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"}
		return *(*uintptr)(unsafe.Pointer(&stats)), func() { go countHits(keys); go countMisses(keys) }
	case "local":
		accounts := fresh()
		return addr(accounts), func() { go credit(accounts); go debit(accounts) }
	case "field":
		s := &server{name: "api", sessions: fresh()}
		return addr(s.sessions), func() { go s.login(); go s.logout() }
	case "syncmap":
		m := fresh()
		registry.Store("accounts", m)
		return addr(m), func() { go fillEven(); go fillOdd() }
	case "holders":
		var mu sync.Mutex
		a, b, c := fresh(), fresh(), fresh()
		wait := make(chan int)
		ready := make(chan bool)
		go func() {
			// Only goroutines hold the maps: this one exits.
			go keeper(a, wait)
			go decoy(&mu, b)
			go decoy(&mu, c)
			ready <- true
		}()
		<-ready
		return addr(a), func() { go writerX(a); go writerY(a) }
	case "anon":
		// Every allocation from here on is profiled (as
		// GODEBUG=memprofilerate=1 does from Go 1.20; main reaches
		// runtime.MemProfile so the runtime keeps profiling on).
		runtime.MemProfileRate = 1
		parked = []any{newParked()}
		runtime.MemProfileRate = 512 * 1024
		return addr(parked[0].(map[int]int)), func() { go anonFill(); go anonDrain() }
	case "gosched-ww":
		m := fresh()
		return addr(m), func() { go yieldWriterA(m); go yieldWriterB(m) }
	case "gosched-rw":
		m := fresh()
		return addr(m), func() { go yieldWriterA(m); go yieldReader(m) }
	case "gosched-iw":
		m := fresh()
		return addr(m), func() { go yieldWriterA(m); go yieldIterator(m) }
	case "gosched-deep-ww":
		m := fresh()
		return addr(m), func() { go deepWriterA(m); go deepWriterB(m) }
	case "gosched-closure-ww", "gosched-closure-rw", "gosched-closure-iw":
		// The same races written as closures: each goroutine reaches the
		// map through its closure context, not a variable of its own.
		m := fresh()
		writer := func() {
			for j := 0; ; j++ {
				m[j&1023] = j
				runtime.Gosched()
			}
		}
		other := func() {
			for j := 0; ; j++ {
				m[(j&1023)+1<<20] = j
				runtime.Gosched()
			}
		}
		switch mode {
		case "gosched-closure-rw":
			other = func() {
				for j := 0; ; j++ {
					sink += m[j&1023]
					runtime.Gosched()
				}
			}
		case "gosched-closure-iw":
			other = func() {
				for {
					for k := range m {
						sink += k
						runtime.Gosched()
					}
				}
			}
		}
		return addr(m), func() { go writer(); go other() }
	}
	return 0, nil
}

func main() {
	if len(os.Args) > 99 {
		// Reachable runtime.MemProfile keeps memory profiling on (the
		// runtime zeroes MemProfileRate in binaries that cannot reach it).
		runtime.MemProfile(nil, false)
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: diagnose MODE [wait]")
		os.Exit(64)
	}
	if !run(os.Args[1], len(os.Args) > 2 && os.Args[2] == "wait") {
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(64)
	}
	// main holds none of the maps: run's frame is gone.
	time.Sleep(60 * time.Second)
	fmt.Fprintln(os.Stderr, "no crash within 60s")
	os.Exit(3)
}

// run sets a mode up, prints the header, waits for a line of standard
// input when asked, and starts the race.
//
//go:noinline
func run(mode string, wait bool) bool {
	// MODE-late races 50 ms after start: a crash loop's restarts are then
	// all seen (probes attach within milliseconds of the exec).
	late := strings.HasSuffix(mode, "-late")
	a, race := start(strings.TrimSuffix(mode, "-late"))
	if race == nil {
		return false
	}
	fmt.Printf("pid=%d map=%#x go=%s build=%s\n", os.Getpid(), a, runtime.Version(), build)
	if wait {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	if late {
		time.Sleep(50 * time.Millisecond)
	}
	go race()
	return true
}
