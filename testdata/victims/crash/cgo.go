//go:build cgo

package main

// #include <unistd.h>
import "C"

// With cgo enabled the victim is a real cgo program, linked by gcc
// (-linkmode=external): the way distributions build Go programs.
func init() { cgoPID = int(C.getpid()) }
