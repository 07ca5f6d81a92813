// Package symbolizer owns turning addresses of a Go program into names and
// turning a frozen Go process into a goroutine dump:
//
//   - a bounded reader of the pclntab (Go 1.19–1.27 formats, stripped
//     binaries included): PC to function, file and line with inlined
//     frames, function lookup by name, SP deltas for unwinding;
//   - locating the pclntab and runtime.firstmoduledata however the binary
//     was linked (Locate: the section, moduledata's shape, symbols, or a
//     bounded scan for the header), which gives the text base Go 1.26+ no
//     longer stores in the pclntab header, and the types/gofunc ranges;
//   - enumerating goroutines through runtime.allgs in another process's
//     memory, unwinding their stacks and writing the Go traceback text.
//
// Binaries and process memory are hostile input: every read, loop and
// allocation here is bounded, and malformed input yields an error, never a
// panic. The package attaches no probes and writes nothing into a target.
package symbolizer
