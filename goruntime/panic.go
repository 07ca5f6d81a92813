package goruntime

// panicArg is the offset of _panic.arg (an eface): +8 up to Go 1.25, after
// argp; Go 1.26 removed argp and arg moved to +0 (runtime2.go of each
// release).
func panicArg(minor int) Offset {
	if minor >= 26 {
		return 0
	}
	return 8
}
