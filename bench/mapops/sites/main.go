// Command sites times calls to a one-instruction probe site (see
// sites_amd64.s). Usage: sites nop5|push|cmp N; prints "ns_per_call=X".
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func nop5()
func push()
func cmp()

func main() {
	f := map[string]func(){"nop5": nop5, "push": push, "cmp": cmp}[os.Args[1]]
	n, err := strconv.Atoi(os.Args[2])
	if f == nil || err != nil {
		fmt.Fprintln(os.Stderr, "usage: sites nop5|push|cmp N")
		os.Exit(64)
	}
	t := time.Now()
	for i := 0; i < n; i++ {
		f()
	}
	fmt.Printf("ns_per_call=%.1f\n", float64(time.Since(t).Nanoseconds())/float64(n))
}
