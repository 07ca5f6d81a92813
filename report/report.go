// Package report owns the versioned crash report data model shared by the
// daemon, the exporter, the socket API and the CLI. It is plain data plus
// the few pure functions that classify a fatal error; it imports no daemon
// internals. Field names are the JSON contract documented in docs/report.md.
package report

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// Schema is the version of the report shape. Bump it on any incompatible
// change to a JSON field.
const Schema = 1

// Crash is one captured fatal error of one process.
type Crash struct {
	Schema     int       `json:"schema"`
	ID         string    `json:"id"`
	Host       string    `json:"host"`
	CapturedAt time.Time `json:"captured_at"`
	Process    Process   `json:"process"`
	Fatal      Fatal     `json:"fatal"`
	// Diagnosis is the conclusion for a map fatal error: the variable,
	// both code paths, the fix, the signature (report/diagnosis.go).
	Diagnosis *Diagnosis `json:"diagnosis,omitempty"`
	Freeze    Freeze     `json:"freeze"`
	// Map is the map a map fatal error is about, when it was found.
	Map *Map `json:"map,omitempty"`
	// Partners are the other goroutines that were on the map, strongest
	// evidence first; PartnersNote says why when there are none.
	Partners     []Partner `json:"partners,omitempty"`
	PartnersNote string    `json:"partners_note,omitempty"`
	// Frames are the crashing goroutine's innermost frames with their
	// arguments and locals as delve reads them from the saved core (only
	// for binaries with DWARF and capture.core enabled).
	Frames *Frames `json:"frames,omitempty"`
	// Goroutines is every goroutine at the freeze, symbolized.
	Goroutines []symbolizer.Goroutine `json:"goroutines,omitempty"`
	Capture    Capture                `json:"capture"`
}

// Evidence kinds for a partner, strongest first.
const (
	// EvidenceFatalSameMap: another thread also hit fatal on this map.
	EvidenceFatalSameMap = "fatal_same_map"
	// EvidenceFlightRecorder: a map-op probe saw it touch this map.
	EvidenceFlightRecorder = "flight_recorder"
	// EvidenceMapFunction: frozen inside a map function on this map
	// (registers or spill slots).
	EvidenceMapFunction = "map_function_same_map"
	// EvidenceStackHoldsMap: its stack holds the map's address.
	EvidenceStackHoldsMap = "stack_holds_map"
	// EvidenceRunning: running user code on another thread at the freeze.
	EvidenceRunning = "running_user_code"
	// EvidenceHoldsMap: a frame of it (anywhere on its stack, or an object
	// a frame points to, such as a closure context) holds the map's
	// pointer; found by the diagnosis's holder search after the release.
	EvidenceHoldsMap = "holds_map"
)

// EvidenceRank orders evidence kinds, 1 strongest: partners found by
// several means are merged keeping the strongest.
func EvidenceRank(evidence string) int {
	switch evidence {
	case EvidenceFatalSameMap:
		return 1
	case EvidenceFlightRecorder:
		return 2
	case EvidenceMapFunction:
		return 3
	case EvidenceRunning:
		return 4
	case EvidenceHoldsMap:
		return 6
	}
	return 5
}

// Partner is another goroutine that was on the crashing map, with how we
// know. Rank 1 is the strongest evidence.
type Partner struct {
	Goid int64 `json:"goid"`
	TID  int   `json:"tid,omitempty"`
	// Op is the map operation: assign, access, delete, iterate, clear,
	// clone; empty when the evidence does not say.
	Op          string `json:"op,omitempty"`
	MapFunction string `json:"map_function,omitempty"`
	// Function, File and Line are the user code that called into the map
	// (not runtime.mapassign).
	Function string `json:"function,omitempty"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	PC       uint64 `json:"pc,omitempty"`
	Evidence string `json:"evidence"`
	Rank     int    `json:"rank"`
	// AgoNS is how long before the first fatal event it touched the map
	// (flight recorder only).
	AgoNS int64 `json:"ago_ns,omitempty"`
}

// Map is the offending map: how it was found, and its decoded contents
// (hmapdecode.Result's fields, inlined: header, flags_decoded, growth,
// stats, occupancy, anomalies, ...).
type Map struct {
	Addr     uint64 `json:"addr"`
	TypeAddr uint64 `json:"type_addr,omitempty"`
	// FoundBy says how the address was recovered (e.g. "spill slots of
	// runtime.mapassign_fast64"); empty with Error when it was not.
	FoundBy     string            `json:"found_by,omitempty"`
	MapFunction string            `json:"map_function,omitempty"`
	Op          string            `json:"op,omitempty"`
	CallSite    *symbolizer.Frame `json:"call_site,omitempty"`
	Error       string            `json:"error,omitempty"`
	*hmapdecode.Result
}

// Process identifies the crashed process. (PID, StartTime) is the identity:
// a PID alone can be reused.
type Process struct {
	// PID is the process's PID as the daemon sees it (the host's, for a
	// daemon in the host PID namespace).
	PID int `json:"pid"`
	// NSPID is its PID inside its own PID namespace (a container's view),
	// when that differs.
	NSPID int `json:"ns_pid,omitempty"`
	// StartTime is field 22 of /proc/PID/stat: clock ticks after boot.
	StartTime uint64   `json:"start_time"`
	Exe       string   `json:"exe"`
	BuildID   string   `json:"build_id,omitempty"`
	Cmdline   []string `json:"cmdline,omitempty"`
	GoVersion string   `json:"go_version"`
	MapLayout string   `json:"map_layout"`
	Stripped  bool     `json:"stripped"`
	Cgroup    string   `json:"cgroup,omitempty"`
	Unit      string   `json:"unit,omitempty"`
	Container string   `json:"container,omitempty"`
}

// Fatal is what the runtime was about to print, and every thread that got there.
type Fatal struct {
	Message string  `json:"message"`
	Kind    Kind    `json:"kind"`
	Events  []Event `json:"events"`
}

// Event is one hit of a crash probe. Several threads often hit fatal
// together; events are sorted by kernel time.
type Event struct {
	TID      int       `json:"tid"`
	Goid     int64     `json:"goid"`
	KTimeNS  uint64    `json:"ktime_ns"`
	WallTime time.Time `json:"wall_time"`
	Function string    `json:"function"`
	Message  string    `json:"message,omitempty"`
	// PC is the probed instruction; Caller the return address at entry.
	PC     uint64 `json:"pc"`
	Caller uint64 `json:"caller,omitempty"`
	// CallerFunction is the function that called into the fatal path
	// (for a map error, the map function that detected the race).
	CallerFunction string   `json:"caller_function,omitempty"`
	Stack          []uint64 `json:"stack,omitempty"`
	// AfterRelease marks a thread that reached fatal only after the
	// process was resumed (the group stop had caught it just before).
	AfterRelease bool `json:"after_release,omitempty"`
}

// How a crashing process was held (Freeze.Hold).
const (
	// HoldPtrace: the crashing threads waited inside the crash probe until
	// every thread was seized with ptrace; nothing was printed before, and
	// nothing a parent or job-control shell can observe happened.
	HoldPtrace = "ptrace"
	// HoldSigstop: the probe sent SIGSTOP (freeze.hold=sigstop, or no
	// probe could wait and the parent was judged unable to see a stop),
	// then ptrace took over. A parent waiting with WUNTRACED sees a stop.
	HoldSigstop = "sigstop"
	// HoldLate: the crashing thread ran on after the probe (no probe
	// could wait and the parent could see a stop); the process was seized
	// as soon as the daemon could, so the runtime may have printed part of
	// its message before the snapshot.
	HoldLate = "late"
	// HoldNone: not held at all (observe-only, traced by a debugger, or
	// the daemon stopping); the capture read a running process.
	HoldNone = "none"
)

// Freeze records how the process was held, for how long, and how it ended.
type Freeze struct {
	// FrozenNS is from the crash probe's event (kernel time) to the
	// release of the last thread.
	FrozenNS int64 `json:"frozen_ns"`
	// Hold is how the process was held (HoldPtrace, ...); HoldNote says
	// why a lesser hold was used.
	Hold     string `json:"hold,omitempty"`
	HoldNote string `json:"hold_note,omitempty"`
	// StopVisible: a stop of the process could be seen by its parent
	// (a SIGSTOP was sent). Never for HoldPtrace.
	StopVisible bool `json:"stop_visible,omitempty"`
	// AllThreadsStoppedNS is from the crash event to every thread
	// stopped (like FrozenNS, Capture.DurationNS and the stages' StartNS:
	// the exporter's spans rely on one origin).
	AllThreadsStopped   bool  `json:"all_threads_stopped"`
	AllThreadsStoppedNS int64 `json:"all_threads_stopped_ns"`
	// Resumed: mapsentry let the process go while it was alive. A process
	// that died while held (killed) was not resumed: Released says so.
	Resumed bool `json:"resumed"`
	// Released is how the hold ended: "detached" (every thread let go),
	// "gone" (the process had died), "not_held".
	Released    string `json:"released,omitempty"`
	DeadlineHit bool   `json:"deadline_hit"`
	// ExitStatus is the exit code (e.g. 2) once the process was seen to
	// exit; ExitSignal the killing signal's number when it died of one.
	ExitStatus *int `json:"exit_status,omitempty"`
	ExitSignal *int `json:"exit_signal,omitempty"`
}

// Capture accounts for the capture itself.
type Capture struct {
	DurationNS int64    `json:"duration_ns"`
	BytesRead  int64    `json:"bytes_read"`
	Errors     []string `json:"errors,omitempty"`
	// Missing names parts not captured before the freeze deadline; Cut
	// the stages the deadline interrupted (what they hold is partial).
	Missing []string `json:"missing,omitempty"`
	Cut     []string `json:"cut,omitempty"`
	// Stages are the capture stages that ran while frozen, in order.
	Stages []Stage `json:"stages,omitempty"`
	// Core is the compact core written while frozen (capture.core).
	Core *Core `json:"core,omitempty"`
}

// Frames is what delve read from the saved core.
type Frames struct {
	Goroutine int64       `json:"goroutine"`
	Frames    []FrameVars `json:"frames,omitempty"`
	Error     string      `json:"error,omitempty"`
}

// FrameVars is one frame with its variables' names and types; values only
// with report.values (arguments can hold secrets).
type FrameVars struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	Args     []Var  `json:"args,omitempty"`
	Locals   []Var  `json:"locals,omitempty"`
}

// Var is a variable as DWARF describes it.
type Var struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value,omitempty"`
}

// Core is a saved ELF core of the frozen process, which `dlv core EXE
// PATH` and gdb open.
type Core struct {
	Path      string `json:"path"`
	Segments  int    `json:"segments"`
	Threads   int    `json:"threads"`
	Copied    int64  `json:"copied_bytes"`
	OnDisk    int64  `json:"on_disk_bytes"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Stage is one capture stage's timing. StartNS counts from the daemon
// seeing the first fatal event, like Freeze.FrozenNS.
type Stage struct {
	Name       string `json:"name"` // map, goroutines, partners
	StartNS    int64  `json:"start_ns"`
	DurationNS int64  `json:"duration_ns"`
}

// Kind classifies a fatal error.
type Kind string

const (
	KindMapConcurrentWrite Kind = "map_concurrent_write"
	KindMapReadWrite       Kind = "map_read_write"
	KindMapIterationWrite  Kind = "map_iteration_write"
	KindMapCloneWrite      Kind = "map_clone_write"
	// KindMapCorrupted: the runtime found a map's internal state broken
	// while growing it ("bad map state"); classic maps only, and almost
	// always the aftermath of a race the write checks missed.
	KindMapCorrupted     Kind = "map_corrupted"
	KindOtherFatal       Kind = "other_fatal"
	KindThrow            Kind = "throw"
	KindUnrecoveredPanic Kind = "unrecovered_panic"
)

// Classify maps the runtime's message and the probed function to a Kind.
// function is the probe's function name (runtime.fatal, runtime.throw,
// internal/runtime/maps.fatal, runtime.fatalpanic).
func Classify(message, function string) Kind {
	switch {
	case function == "runtime.fatalpanic":
		return KindUnrecoveredPanic
	case strings.Contains(message, "concurrent map read and map write"):
		return KindMapReadWrite
	case strings.Contains(message, "concurrent map iteration and map write"):
		return KindMapIterationWrite
	case strings.Contains(message, "concurrent map clone and map write"):
		return KindMapCloneWrite
	case strings.Contains(message, "concurrent map writes"):
		// Includes Swiss "small map with no empty slot (concurrent map writes?)".
		return KindMapConcurrentWrite
	case function == "runtime.throw" && mapStateThrow(message):
		return KindMapCorrupted
	case function == "runtime.throw":
		return KindThrow
	default:
		return KindOtherFatal
	}
}

// mapStateThrow reports the throws of the classic map's growth code when
// it meets a state only a concurrent write produces (runtime/map*.go).
func mapStateThrow(message string) bool {
	switch message {
	case "bad map state", "bad evacuatedN", "oldoverflow is not nil":
		return true
	}
	return false
}

// NewID returns a time-ordered crash id: 16 hex digits of Unix nanoseconds,
// then 8 random hex digits. Sorting ids sorts crashes by capture time.
func NewID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%016x%s", uint64(t.UnixNano()), hex.EncodeToString(b[:]))
}
