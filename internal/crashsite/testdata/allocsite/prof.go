//go:build !noprof

package main

import (
	"os"
	"runtime"
)

// Reaching runtime.MemProfile keeps runtime.MemProfileRate as set (as
// importing net/http/pprof does): a binary that cannot reach it has the
// rate zeroed at start by the runtime, and nothing is ever sampled (the
// -tags noprof build). ALLOCSITE_EVERY=1 samples every allocation the
// way Go 1.19 programs must (GODEBUG=memprofilerate works from Go 1.20:
// golang/go#55100).
func init() {
	if len(os.Args) > 99 {
		runtime.MemProfile(nil, false)
	}
	if os.Getenv("ALLOCSITE_EVERY") == "1" {
		runtime.MemProfileRate = 1
	}
}
