// Package probes owns finding Go programs on the host and putting crash
// probes on them: the exec gate (fanotify permission events that hold the
// exec of a binary not seen before until its probes are in, on every
// mounted filesystem of every mount namespace that execs), exec events and
// the /proc scan, worked through by a bounded pool in that priority;
// identifying Go binaries from buildinfo, resolving crash function file
// offsets from the pclntab however the binary was linked (stripped,
// external, PIE), attaching the crash uprobes once per (device, inode,
// contents generation) with an explicit file offset and a cookie naming
// the binary, and keeping them while the file exists (an LRU cap bounds
// how many); the container view of a process (its namespace PID, cgroup,
// unit, container id); and the opt-in map-op probes.
//
// It never decodes the memory of a crashed process.
package probes
