package goruntime

// GOffsets are offsets inside runtime.g (and the gobuf embedded at g.sched).
// Table values: Go source and DWARF of 1.19, 1.26 and 1.27 builds
// (../shared/reference/go-runtime.md §5); DWARF overrides when present.
type GOffsets struct {
	StackLo, StackHi Offset
	M                Offset
	SchedSP          Offset
	SchedPC          Offset
	SchedBP          Offset
	SyscallBP        Offset // 1.23+
	AtomicStatus     Offset // uint32
	Goid             Offset // int64 in 1.19, uint64 from 1.20
	WaitSince        Offset
	WaitReason       Offset // uint8
	GoPC             Offset
	StartPC          Offset
	LockedM          Offset
	Size             Offset
}

// MOffsets are offsets inside runtime.m.
type MOffsets struct {
	G0      Offset
	Curg    Offset
	ProcID  Offset
	P       Offset
	ID      Offset
	LockedG Offset
}

func unknownG() GOffsets {
	return GOffsets{Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown,
		Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown}
}

func unknownM() MOffsets {
	return MOffsets{Unknown, Unknown, Unknown, Unknown, Unknown, Unknown}
}

// gTable returns the built-in g offsets for Go 1.minor.
//
// Why they move: g.syscallbp was added in 1.23 (atomicstatus and goid shift
// by 8); gobuf lost its ret field in 1.25 (commit c594762ad5), shrinking
// gobuf to 48 B and moving everything after it back by 8.
func gTable(minor int) GOffsets {
	g := unknownG()
	g.StackLo, g.StackHi, g.M, g.SchedSP, g.SchedPC = 0, 8, 48, 56, 64
	switch {
	case minor <= 22:
		g.SchedBP, g.AtomicStatus, g.Goid = 104, 144, 152
	case minor <= 24:
		g.SchedBP, g.SyscallBP, g.AtomicStatus, g.Goid = 104, 128, 152, 160
	default:
		g.SchedBP, g.SyscallBP, g.AtomicStatus, g.Goid = 96, 120, 144, 152
	}
	return g
}
