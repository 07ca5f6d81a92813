// Command victim holds the benchmark maps: 1M-entry map[int64]int64 and
// map[string]string in package variables (so delve finds them by name),
// prints their header and type addresses, then idles on stdin.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"unsafe"
)

var (
	Ints map[int64]int64
	Strs map[string]string
)

func show(name string, m interface{}) {
	w := (*[2]uintptr)(unsafe.Pointer(&m))
	fmt.Printf("%s %#x %#x\n", name, w[1], w[0])
}

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	Ints = make(map[int64]int64)
	Strs = make(map[string]string)
	for i := 0; i < n; i++ {
		Ints[int64(i)*2654435761] = int64(i)
		Strs["k"+strconv.Itoa(i)] = "v" + strconv.Itoa(i)
	}
	show("ints", Ints)
	show("strs", Strs)
	fmt.Println("READY")
	bufio.NewScanner(os.Stdin).Scan()
}
