// Package goruntime owns every fact about the Go runtime that depends on the
// Go version and architecture: struct offsets of g, m, the classic hmap and
// the Swiss maps.Map/table, the map type descriptors, and the choice of map
// layout from a binary's buildinfo.
//
// Facts come from two places, in this order: the binary's own DWARF when it
// has it, then the built-in tables below, which were read from DWARF of real
// builds (Go 1.19, 1.26, 1.27) or from the Go source at the release tag
// (1.20–1.25). An offset that neither source knows is Unknown, never zero:
// callers get ErrUnsupported and say so instead of reading the wrong word.
//
// The package reads nothing but the binary it is handed.
package goruntime
