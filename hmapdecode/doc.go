// Package hmapdecode owns the forensic decoding of one Go map from the raw
// memory of a (frozen) process: the classic runtime.hmap with its buckets,
// overflow chains and incremental growth (Go 1.19–1.23, and 1.24/1.25 built
// with GOEXPERIMENT=noswissmap), and the Swiss internal/runtime/maps.Map with
// its small-map group, directory, tables and control bytes (Go 1.24–1.27,
// including 1.27's type layout and GOEXPERIMENT=mapsplitgroup).
//
// It reads memory only through the small Memory interface, never opens
// /proc itself, and treats every byte it reads as hostile: every read, loop
// and allocation is bounded by Limits, and no input makes it panic. The
// output is a JSON-tagged Result (the crash report's "map" field): header,
// decoded flags, growth state, statistics, an occupancy matrix for a heat
// map, and anomalies with stable codes documented in docs/hmapdecode.md.
//
// The Go-version facts (struct offsets) come from goruntime.Layout; this
// package holds the algorithms and the runtime constants that have not
// changed across the supported versions (tophash and control byte values).
package hmapdecode
