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
	SyscallSP        Offset
	SyscallPC        Offset
	SyscallBP        Offset // 1.23+
	AtomicStatus     Offset // uint32
	Goid             Offset // int64 in 1.19, uint64 from 1.20
	WaitSince        Offset
	WaitReason       Offset // uint8
	GoPC             Offset
	StartPC          Offset
	LockedM          Offset
	ParentGoid       Offset // 1.21+
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
	return GOffsets{Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown,
		Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown, Unknown}
}

// gTable returns the built-in g offsets for Go 1.minor.
//
// Every value was read from DWARF of a real linux/amd64 build with each
// release (1.19.8, 1.20.14, 1.21.13, 1.22.12, 1.23.12, 1.24.13, 1.25.0,
// 1.26.8, 1.27.3) and agrees with runtime2.go at those tags; arm64 shares
// the layout. Why they move: 1.21 added g.parentGoid and dropped the
// per-g tracer fields (lockedm -24); 1.23 added g.syscallbp (everything
// after it +8); 1.25 removed gobuf.ret (commit c594762ad5, everything
// after sched -8); 1.26 grew the g before parentGoid by 8.
func gTable(minor int) GOffsets {
	g := unknownG()
	g.StackLo, g.StackHi, g.M, g.SchedSP, g.SchedPC = 0, 8, 48, 56, 64
	switch {
	case minor <= 20:
		g.SchedBP, g.SyscallSP, g.SyscallPC = 104, 112, 120
		g.AtomicStatus, g.Goid, g.WaitSince, g.WaitReason = 144, 152, 168, 176
		g.LockedM, g.GoPC, g.StartPC, g.Size = 232, 296, 312, 392
	case minor <= 22:
		g.SchedBP, g.SyscallSP, g.SyscallPC = 104, 112, 120
		g.AtomicStatus, g.Goid, g.WaitSince, g.WaitReason = 144, 152, 168, 176
		g.LockedM, g.ParentGoid, g.GoPC, g.StartPC = 208, 272, 280, 296
		g.Size = 408
		if minor == 22 {
			g.Size = 424
		}
	case minor <= 24:
		g.SchedBP, g.SyscallSP, g.SyscallPC, g.SyscallBP = 104, 112, 120, 128
		g.AtomicStatus, g.Goid, g.WaitSince, g.WaitReason = 152, 160, 176, 184
		g.LockedM, g.ParentGoid, g.GoPC, g.StartPC = 216, 280, 288, 304
		g.Size = 432
		if minor == 24 {
			g.Size = 440
		}
	case minor == 25:
		g.SchedBP, g.SyscallSP, g.SyscallPC, g.SyscallBP = 96, 104, 112, 120
		g.AtomicStatus, g.Goid, g.WaitSince, g.WaitReason = 144, 152, 168, 176
		g.LockedM, g.ParentGoid, g.GoPC, g.StartPC, g.Size = 208, 272, 280, 296, 440
	default: // 1.26, 1.27
		g.SchedBP, g.SyscallSP, g.SyscallPC, g.SyscallBP = 96, 104, 112, 120
		g.AtomicStatus, g.Goid, g.WaitSince, g.WaitReason = 144, 152, 168, 176
		g.LockedM, g.ParentGoid, g.GoPC, g.StartPC, g.Size = 208, 280, 288, 304, 456
	}
	return g
}

// MOffsetsFor returns the built-in m offsets for Go 1.minor (DWARF of the
// same builds as gTable). m.procid is the thread id (gettid) on Linux.
func MOffsetsFor(minor int) MOffsets {
	switch {
	case minor <= 21:
		return MOffsets{G0: 0, Curg: 192, ProcID: 72, P: 208, ID: 232, LockedG: 352}
	case minor == 22:
		return MOffsets{G0: 0, Curg: 192, ProcID: 72, P: 208, ID: 232, LockedG: 344}
	case minor <= 24:
		return MOffsets{G0: 0, Curg: 192, ProcID: 72, P: 208, ID: 232, LockedG: 368}
	case minor == 25:
		return MOffsets{G0: 0, Curg: 184, ProcID: 64, P: 200, ID: 224, LockedG: 360}
	default: // 1.26, 1.27
		return MOffsets{G0: 0, Curg: 184, ProcID: 64, P: 208, ID: 232, LockedG: 384}
	}
}

// POffsetID is the offset of p.id (int32), the first field in every
// supported version.
const POffsetID Offset = 0

// Goroutine status values (runtime2.go; stable since 1.16, 1.26 added
// _Gleaked and _Gdeadextra). The _Gscan bit is masked off by GStatusName.
const (
	GIdle      = 0
	GRunnable  = 1
	GRunning   = 2
	GSyscall   = 3
	GWaiting   = 4
	GDead      = 6
	GCopystack = 8
	GPreempted = 9
	GLeaked    = 10 // 1.26+
	GDeadExtra = 11 // 1.26+
	GScan      = 0x1000
)

// GStatusName is the runtime's gStatusStrings entry for status, as the
// traceback prints it ("running", "syscall", ...), or "" when unknown.
func GStatusName(minor int, status uint32) string {
	switch status &^ GScan {
	case GIdle:
		return "idle"
	case GRunnable:
		return "runnable"
	case GRunning:
		return "running"
	case GSyscall:
		return "syscall"
	case GWaiting:
		return "waiting"
	case GDead:
		return "dead"
	case GCopystack:
		return "copystack"
	case GPreempted:
		return "preempted"
	case GLeaked:
		if minor >= 26 {
			return "leaked"
		}
	case GDeadExtra:
		if minor >= 26 {
			return "waiting for cgo callback"
		}
	}
	return ""
}

// WaitReasonString is the runtime's waitReasonStrings entry for reason in
// Go 1.minor ("chan receive", "sync.Mutex.Lock"), or "" for
// waitReasonZero and unknown values. The enum is renumbered between
// releases (1.26 even reordered it to group the reasons a goroutine-leak
// check may treat as blocked forever), so the table is per version, in
// the order of the waitReason constants of runtime2.go at each tag.
func WaitReasonString(minor int, reason uint8) string {
	var tab []string
	switch {
	case minor <= 19:
		tab = waitReasons119
	case minor <= 21:
		tab = waitReasons120
	case minor == 22:
		tab = waitReasons122
	case minor == 23:
		tab = waitReasons123
	case minor == 24:
		tab = waitReasons124
	case minor == 25:
		tab = waitReasons125
	default:
		tab = waitReasons126
	}
	if int(reason) < len(tab) {
		return tab[reason]
	}
	return ""
}

var (
	waitReasons119 = []string{"", "GC assist marking", "IO wait", "chan receive (nil chan)", "chan send (nil chan)",
		"dumping heap", "garbage collection", "garbage collection scan", "panicwait", "select", "select (no cases)",
		"GC assist wait", "GC sweep wait", "GC scavenge wait", "chan receive", "chan send", "finalizer wait",
		"force gc (idle)", "semacquire", "sleep", "sync.Cond.Wait", "timer goroutine (idle)",
		"trace reader (blocked)", "wait for GC cycle", "GC worker (idle)", "preempted", "debug call"}
	waitReasons120 = []string{"", "GC assist marking", "IO wait", "chan receive (nil chan)", "chan send (nil chan)",
		"dumping heap", "garbage collection", "garbage collection scan", "panicwait", "select", "select (no cases)",
		"GC assist wait", "GC sweep wait", "GC scavenge wait", "chan receive", "chan send", "finalizer wait",
		"force gc (idle)", "semacquire", "sleep", "sync.Cond.Wait", "sync.Mutex.Lock", "sync.RWMutex.RLock",
		"sync.RWMutex.Lock", "trace reader (blocked)", "wait for GC cycle", "GC worker (idle)",
		"GC worker (active)", "preempted", "debug call", "GC mark termination", "stopping the world"}
	waitReasons122 = append(append([]string(nil), waitReasons120...),
		"flushing proc caches", "trace goroutine status", "trace proc status", "page trace flush", "coroutine")
	waitReasons123 = append(append([]string(nil), waitReasons122...), "GC weak to strong wait")
	waitReasons124 = []string{"", "GC assist marking", "IO wait", "chan receive (nil chan)", "chan send (nil chan)",
		"dumping heap", "garbage collection", "garbage collection scan", "panicwait", "select", "select (no cases)",
		"GC assist wait", "GC sweep wait", "GC scavenge wait", "chan receive", "chan send", "finalizer wait",
		"force gc (idle)", "semacquire", "sleep", "sync.Cond.Wait", "sync.Mutex.Lock", "sync.RWMutex.RLock",
		"sync.RWMutex.Lock", "sync.WaitGroup.Wait", "trace reader (blocked)", "wait for GC cycle",
		"GC worker (idle)", "GC worker (active)", "preempted", "debug call", "GC mark termination",
		"stopping the world", "flushing proc caches", "trace goroutine status", "trace proc status",
		"page trace flush", "coroutine", "GC weak to strong wait", "synctest.Run", "synctest.Wait",
		"chan receive (synctest)", "chan send (synctest)", "select (synctest)"}
	waitReasons125 = []string{"", "GC assist marking", "IO wait", "chan receive (nil chan)", "chan send (nil chan)",
		"dumping heap", "garbage collection", "garbage collection scan", "panicwait", "select", "select (no cases)",
		"GC assist wait", "GC sweep wait", "GC scavenge wait", "chan receive", "chan send", "finalizer wait",
		"force gc (idle)", "GOMAXPROCS updater (idle)", "semacquire", "sleep", "sync.Cond.Wait",
		"sync.Mutex.Lock", "sync.RWMutex.RLock", "sync.RWMutex.Lock", "sync.WaitGroup.Wait",
		"trace reader (blocked)", "wait for GC cycle", "GC worker (idle)", "GC worker (active)", "preempted",
		"debug call", "GC mark termination", "stopping the world", "flushing proc caches",
		"trace goroutine status", "trace proc status", "page trace flush", "coroutine",
		"GC weak to strong wait", "synctest.Run", "synctest.Wait", "chan receive (durable)",
		"chan send (durable)", "select (durable)", "sync.WaitGroup.Wait (durable)", "cleanup wait"}
	waitReasons126 = []string{"", "GC assist marking", "IO wait", "dumping heap", "garbage collection",
		"garbage collection scan", "panicwait", "GC assist wait", "GC sweep wait", "GC scavenge wait",
		"finalizer wait", "force gc (idle)", "GOMAXPROCS updater (idle)", "semacquire", "sleep",
		"chan receive (nil chan)", "chan send (nil chan)", "select (no cases)", "select", "chan receive",
		"chan send", "sync.Cond.Wait", "sync.Mutex.Lock", "sync.RWMutex.RLock", "sync.RWMutex.Lock",
		"sync.WaitGroup.Wait", "trace reader (blocked)", "wait for GC cycle", "GC worker (idle)",
		"GC worker (active)", "preempted", "debug call", "GC mark termination", "stopping the world",
		"flushing proc caches", "trace goroutine status", "trace proc status", "page trace flush",
		"coroutine", "GC weak to strong wait", "synctest.Run", "synctest.Wait", "chan receive (durable)",
		"chan send (durable)", "select (durable)", "sync.WaitGroup.Wait (durable)", "cleanup wait"}
)
