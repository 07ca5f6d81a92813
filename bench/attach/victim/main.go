// Command victim dies of concurrent map writes DELAY milliseconds after it
// starts: how soon after exec a crash is still captured. Usage: victim DELAY.
package main

import (
	"os"
	"strconv"
	"time"
)

func main() {
	ms, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Exit(64)
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	m := map[int]int{}
	for w := 0; w < 4; w++ {
		go func(w int) {
			for i := 0; ; i++ {
				m[i%1024+w<<20] = i
			}
		}(w)
	}
	time.Sleep(time.Minute)
	os.Exit(3)
}
