// Package probes owns finding Go programs on the host and putting crash
// probes on them: scanning /proc and following exec events, identifying Go
// binaries from buildinfo, resolving function file offsets from .gopclntab
// (stripped binaries included), attaching the crash uprobes once per
// (device, inode) with an explicit file offset and a cookie naming the
// binary, and detaching when no process runs the binary any more.
//
// It never decodes the memory of a crashed process.
package probes
