// Package inspect owns looking into a running Go process on demand: the
// goroutine capture shared by the crash path (daemon/internal/capture) and the live
// `dump`, and the live operations themselves — `decode` (one map) and
// `dump` (every goroutine) — each a brief freeze of the target that is
// resumed on every path: success, error, the freeze deadline, and the
// cancellation of the request that asked for it.
//
// Reading is done while the process is stopped; naming (symbolizing
// goroutine frames, naming candidate map types) after it was resumed,
// since that needs only the binary.
package inspect
