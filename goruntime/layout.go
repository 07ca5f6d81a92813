package goruntime

import "fmt"

// Layout is everything version-dependent about one binary's runtime.
type Layout struct {
	Version Version
	Arch    string // GOARCH: amd64 or arm64
	Maps    MapKind
	G       GOffsets
	M       MOffsets
	Type    TypeOffsets
	Classic ClassicOffsets // valid when Maps == MapClassic
	Swiss   SwissOffsets   // valid when Maps == MapSwiss
	// PanicArg is the offset of the panic value (eface) in runtime._panic.
	PanicArg Offset
	// Heap locates heap spans and memory-profile records (the allocation
	// site of a map): from DWARF only (ApplyHeapDWARF), nil without it;
	// HeapNote then says what was missing.
	Heap     *HeapOffsets
	HeapNote string
	// Source says where the offsets came from: "table", or "dwarf" when
	// DWARF confirmed or overrode the table.
	Source string
}

// MapKindFor chooses the map implementation from the version alone:
// classic up to 1.23, Swiss from 1.24 unless built with noswissmap
// (accepted only by 1.24 and 1.25).
func MapKindFor(v Version) MapKind {
	switch {
	case v.Minor <= 23:
		return MapClassic
	case v.Minor <= 25 && (v.HasExperiment("noswissmap")):
		return MapClassic
	default:
		return MapSwiss
	}
}

// ForVersion returns the built-in layout for a Go version and GOARCH.
func ForVersion(v Version, arch string) (*Layout, error) {
	if err := v.Supported(); err != nil {
		return nil, err
	}
	if arch != "amd64" && arch != "arm64" {
		return nil, fmt.Errorf("GOARCH %q: %w", arch, ErrUnsupported)
	}
	l := &Layout{
		Version:  v,
		Arch:     arch,
		Maps:     MapKindFor(v),
		G:        gTable(v.Minor),
		M:        MOffsetsFor(v.Minor),
		Type:     typeTable(),
		Source:   "table",
		PanicArg: panicArg(v.Minor),
	}
	if l.Maps == MapClassic {
		l.Classic = classicTable(v.Minor, v.HasExperiment("noswissmap"))
	} else {
		l.Swiss = swissTable(v.Minor)
	}
	return l, nil
}

// GRegister names the register that holds the current g in ABIInternal Go
// code: R14 on amd64, R28 on arm64.
func (l *Layout) GRegister() string {
	if l.Arch == "arm64" {
		return "R28"
	}
	return "R14"
}
