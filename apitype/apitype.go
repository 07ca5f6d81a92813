// Package apitype owns the JSON types of the daemon's socket API (/v1/...):
// what the handlers in daemon/api send and what package client decodes.
// There is one definition of each: the packages that produce a value
// (probes, capture, bpf, inspect, daemon) declare theirs as aliases of these,
// so a field added on the daemon side reaches `mapsentry ... -o json`
// without a second copy to keep in step (the pattern of tailscale's
// ipn/ipnstate and client/local).
//
// It holds data only and imports no package of this module, so that any
// package can use it (probes and bpf do, and the tests of hmapdecode import
// probes) and a socket client (package client, the CLI's client commands)
// stays free of cilium/ebpf. The answers that carry the decoder's and the
// symbolizer's own types are in apitype/live; crash reports are
// report.Crash, the versioned report model.
package apitype

import "time"

// Status is the answer of GET /v1/status: the daemon's health and counters.
type Status struct {
	Version   string    `json:"version"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	Socket    string    `json:"socket"`
	StateDir  string    `json:"state_dir"`
	// Instance is the daemon's name for the one-daemon-per-host lock.
	Instance string `json:"instance"`
	Freeze   bool   `json:"freeze_enabled"`
	// Crashes is how many reports the store holds (0 while it is not open).
	Crashes int `json:"crashes_stored"`
	// Store is the report store seen through the publisher: ok or
	// degraded, queue and spool depths, what was dropped.
	Store     StoreStats     `json:"store"`
	Discovery DiscoveryStats `json:"discovery"`
	Capture   CaptureStats   `json:"capture"`
	Kernel    KernelCounters `json:"kernel"`
	Events    EventStats     `json:"events"`
	// StraysResumed counts processes found stopped at a crash probe (a
	// SIGSTOP hold a dead daemon left) at start-up, and resumed;
	// LeftoversResumed those a previous daemon's records named (live
	// decode and dump stops).
	StraysResumed    int `json:"strays_resumed"`
	LeftoversResumed int `json:"leftovers_resumed"`
	// Export is present when OTLP export is enabled.
	Export *ExportStatus `json:"export,omitempty"`
	Checks []Check       `json:"checks,omitempty"`
	// Scope is which processes the daemon can watch at all.
	Scope Scope `json:"scope"`
}

// Scope is which processes the daemon can watch at all, whatever
// discovery.include says: those of its PID namespace and the namespaces
// below it — every process on the host, or only a container's
// (daemon.Scope).
type Scope struct {
	// PIDNamespace is the nsfs inode of the daemon's PID namespace
	// (/proc/self/ns/pid is "pid:[PIDNamespace]").
	PIDNamespace uint32 `json:"pid_namespace"`
	// Host: the initial PID namespace, every process on the host.
	Host        bool   `json:"host"`
	Description string `json:"description"`
}

// StoreStats is the way from capture to the report store (publish.Stats;
// docs/freeze.md).
type StoreStats struct {
	// State is ok, degraded (reports go to the spool or memory while the
	// store is retried) or opening; Error is the last store error and
	// Since when State last changed.
	State string    `json:"state"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"`
	// Queued reports and updates wait for the writer; Memory reports only
	// memory holds (neither store nor spool took them); DeferredUpdates
	// wait for the store. HeldBytes is what all of that takes, against
	// store.queue_max_bytes.
	Queued          int   `json:"queued"`
	Memory          int   `json:"memory"`
	DeferredUpdates int   `json:"deferred_updates"`
	HeldBytes       int64 `json:"held_bytes"`
	// Spooled reports wait in SpoolDir, SpoolBytes in all.
	Spooled    int    `json:"spooled"`
	SpoolBytes int64  `json:"spool_bytes"`
	SpoolDir   string `json:"spool_dir"`
	// Published counts Publish calls, Updates Update calls; Stored the
	// reports that became new in the store, SpoolWrites the spool file
	// writes, MovedIn the reports moved from spool or memory into the
	// store, StoreErrors the failed attempts to open or write the store.
	Published   uint64       `json:"published"`
	Updates     uint64       `json:"updates"`
	Stored      uint64       `json:"stored"`
	SpoolWrites uint64       `json:"spool_writes"`
	MovedIn     uint64       `json:"moved_in"`
	StoreErrors uint64       `json:"store_errors"`
	Dropped     StoreDropped `json:"dropped"`
}

// StoreDropped counts what was lost on the way to the store, by reason;
// each drop is also logged with the report's id.
type StoreDropped struct {
	// QueueFull: reports refused by Publish at the memory bounds (or
	// after the daemon began to stop).
	QueueFull uint64 `json:"queue_full"`
	// MemoryFull: reports the store and the spool refused and memory had
	// no room for.
	MemoryFull uint64 `json:"memory_full"`
	// Shutdown: reports only memory held when the daemon stopped, with
	// store and spool both refusing them.
	Shutdown uint64 `json:"shutdown"`
	// Unencodable: reports that could not be encoded as JSON.
	Unencodable uint64 `json:"unencodable"`
	// Updates: updates (exit status, late events) refused at the memory
	// bounds or still waiting for the store at shutdown.
	Updates uint64 `json:"updates"`
	// UnknownUpdates: updates of a report that is nowhere (deleted,
	// retired by report.retain, or itself dropped).
	UnknownUpdates uint64 `json:"unknown_updates"`
	// SpoolCorrupt: spool files that could not be read back, set aside as
	// ID.json.bad.
	SpoolCorrupt uint64 `json:"spool_corrupt"`
}

// DiscoveryStats are the discovery counters (probes.Stats).
type DiscoveryStats struct {
	Scans            uint64 `json:"scans"`
	ExecEvents       uint64 `json:"exec_events"`
	ExecDropped      uint64 `json:"exec_dropped"`
	GoProcesses      int    `json:"go_processes"`
	BinariesWatched  int    `json:"binaries_watched"`
	ProbesAttached   int    `json:"probes_attached"`
	MapOpLinks       int    `json:"mapop_links"` // map-op uprobe links held
	NonGoExecutables uint64 `json:"non_go_executables"`
	OutOfScope       uint64 `json:"out_of_scope"`
	// ProcessGone counts processes that exited while being discovered.
	ProcessGone uint64 `json:"process_gone"`
	// Inspected counts binaries read (Go or not); a binary is read once
	// for as long as its file is unchanged.
	Inspected uint64 `json:"inspected"`
	// Evicted: detached at the discovery.max_binaries cap; Replaced:
	// detached because the file was rewritten in place or deleted;
	// CapRefused: not probed because every binary under the cap has a
	// live process.
	Evicted    uint64 `json:"evicted"`
	Replaced   uint64 `json:"replaced"`
	CapRefused uint64 `json:"cap_refused"`
	// Queued and QueueDropped are the discovery work queue's.
	Queued       int               `json:"queued"`
	QueueDropped uint64            `json:"queue_dropped"`
	Errors       map[string]uint64 `json:"errors"`
	// Gate is the exec gate's state and coverage.
	Gate GateStatus `json:"exec_gate"`
}

// GateStatus is the exec gate (probes.GateStatus): execs of binaries not
// seen before wait until their crash probes are in.
type GateStatus struct {
	// State is off (discovery.exec_gate.enabled false), starting, active,
	// or unavailable (Reason says why: the capability it needs, or what
	// the kernel refused).
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
	DeadlineNS int64  `json:"deadline_ns,omitempty"`
	// Events counts exec permission events; Held those that waited for a
	// binary to be read; DeadlineHit those allowed at the deadline before
	// their probes were in. MaxWaitNS is the longest hold.
	Events      uint64 `json:"events"`
	Held        uint64 `json:"held"`
	DeadlineHit uint64 `json:"deadline_hit"`
	MaxWaitNS   int64  `json:"max_wait_ns"`
	// HeldPastDeadline counts execs of a file rewritten in place held
	// past the deadline until the probes of its old contents were gone
	// (at most 1 s): mapped earlier, it would get breakpoints at the old
	// offsets.
	HeldPastDeadline uint64 `json:"held_past_deadline"`
	// IgnoreMarks counts files marked so their execs no longer wait;
	// IgnoreMarkErrors marks the kernel refused (the exec still works,
	// it just keeps raising events).
	IgnoreMarks      uint64 `json:"ignore_marks"`
	IgnoreMarkErrors uint64 `json:"ignore_mark_errors"`
	// MountNamespaces is how many mount namespaces are watched for new
	// mounts (the daemon's own and those of containers seen exec'ing).
	MountNamespaces int `json:"mount_namespaces"`
	// Filesystems lists every mounted filesystem seen and whether its
	// execs are held.
	Filesystems []FSCoverage `json:"filesystems"`
}

// FSCoverage is one filesystem (superblock) and whether the exec gate
// covers it.
type FSCoverage struct {
	Dev    string `json:"dev"` // major:minor
	FSType string `json:"fstype"`
	Mount  string `json:"mount"` // a mount point of it, in Namespace
	// Namespace is the mount namespace the mount was seen in ("" for the
	// daemon's own), as mnt:[inode].
	Namespace string `json:"namespace,omitempty"`
	Covered   bool   `json:"covered"`
	Reason    string `json:"reason,omitempty"`
}

// CaptureStats are the crash-capture counters (capture.Stats).
type CaptureStats struct {
	// Sessions counts crashing processes taken on (one capture each); each
	// ends as a report (Crashes) or counted by the crash-loop budget
	// (LoopSuppressed). Crashes released uncaptured are Dropped.
	Sessions    uint64 `json:"sessions"`
	Crashes     uint64 `json:"crashes"`
	FatalEvents uint64 `json:"fatal_events"`
	LateEvents  uint64 `json:"late_events"`
	// Dropped counts crashes released uncaptured because capture.sessions
	// crashing processes were already being handled.
	Dropped uint64 `json:"dropped"`
	// DroppedHeld is the part of Dropped whose thread the probe was
	// holding (waiting, SIGSTOPped, or its process seized): released at
	// once, but a crash the daemon had frozen and did not report. The
	// rest had run on (no daemon heart-beating, no waiter slot) and died
	// untouched.
	DroppedHeld  uint64 `json:"dropped_held"`
	DeadlineHits uint64 `json:"deadline_hits"`
	// ResumeErrors counts releases that failed (a thread not let go in
	// place is still released by the kernel when the tracer thread ends).
	ResumeErrors   uint64 `json:"resume_errors"`
	StoreErrors    uint64 `json:"store_errors"`
	OrphansResumed uint64 `json:"orphans_resumed"`
	ExitsObserved  uint64 `json:"exits_observed"`
	// Holds counts captures by how the process was held (report.Hold*:
	// ptrace, sigstop, late, none).
	Holds            map[string]uint64 `json:"holds"`
	ActiveFreezes    int64             `json:"active_freezes"`
	LastFreezeMicros int64             `json:"last_freeze_us"`
	// LoopSuppressed counts crashes the crash-loop budget only counted.
	LoopSuppressed uint64 `json:"loop_suppressed"`
}

// KernelCounters are the BPF side's per-CPU counters, summed (bpf.Counters).
// Crash and exit events have a ring buffer of their own
// (capture.ring_buffer_bytes), exec events another
// (discovery.exec_ring_buffer_bytes): every reserve that failed is counted
// here by kind.
type KernelCounters struct {
	// RingbufFull counts crash events lost (the crash ring was full): those
	// threads were not held and died uncaptured.
	RingbufFull  uint64 `json:"ringbuf_full"`
	FatalHits    uint64 `json:"fatal_hits"`
	SignalErrors uint64 `json:"signal_errors"`
	// ExecLost counts exec events lost (the exec ring was full): the next
	// /proc rescan finds those processes.
	ExecLost uint64 `json:"exec_lost"`
	// ExitLost counts exit events of crashed processes lost (the crash
	// ring was full): their reports lack the exit status.
	ExitLost uint64 `json:"exit_lost"`
	// ExecKnown counts execs of files the daemon has settled (probed, not
	// Go, out of scope), in mount namespaces it watches: no event sent.
	ExecKnown uint64 `json:"exec_known"`
	// OtherNamespace counts crash-probe hits in processes outside the
	// daemon's PID namespace (a probed binary run there): ignored, neither
	// held nor reported.
	OtherNamespace uint64 `json:"other_namespace_hits"`
	// Waits counts crashing threads that waited inside the probe for the
	// daemon; WaitTimeouts those that gave up (the daemon was too slow).
	Waits        uint64 `json:"waits"`
	WaitTimeouts uint64 `json:"wait_timeouts"`
	// Sigstops counts SIGSTOPs the probe sent (freeze.hold=sigstop, or the
	// fallback when no waiter slot was free and the parent cannot see it).
	Sigstops uint64 `json:"sigstops"`
	// NoDaemon counts crashes not held because the daemon was not
	// heart-beating (stopping, stuck); NotHeld those not held because the
	// process was traced by someone else or no waiter slot was free while
	// its parent could see a stop.
	NoDaemon uint64 `json:"no_daemon"`
	NotHeld  uint64 `json:"not_held"`
}

// EventStats counts ring-buffer records: Read those of the crash ring
// (crash and exit events), ExecRead those of the exec ring.
type EventStats struct {
	Read      uint64 `json:"read"`
	ExecRead  uint64 `json:"exec_read"`
	Malformed uint64 `json:"malformed"`
	Unknown   uint64 `json:"unknown"`
}

// ExportStatus describes the OTLP exporter.
type ExportStatus struct {
	Protocol string `json:"protocol"`
	Endpoint string `json:"endpoint"`
	// Pending is how many stored crashes wait for export.
	Pending int `json:"pending"`
}

// Check is one start-up check of a capability or kernel feature. Fatal
// checks that fail stop the daemon; the others leave it running degraded.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Fatal  bool   `json:"fatal,omitempty"`
	Detail string `json:"detail,omitempty"` // why it failed, what stops working
}

// Binary is one watched Go binary: an element of GET /v1/ps
// (probes.BinaryStatus).
type Binary struct {
	ID        uint32 `json:"id"`
	Path      string `json:"path"`
	Dev       uint64 `json:"dev"`
	Ino       uint64 `json:"ino"`
	GoVersion string `json:"go_version"`
	MapLayout string `json:"map_layout"`
	Stripped  bool   `json:"stripped"`
	HasDWARF  bool   `json:"has_dwarf"`
	// LayoutSource says where the runtime offsets in use came from:
	// "table" (built in, at attach) or "dwarf" (the binary's own DWARF,
	// applied just after the probes are in).
	LayoutSource string   `json:"layout_source,omitempty"`
	PIDs         []int    `json:"pids"`
	Probes       []string `json:"probes"`
	// Error says why the binary has no probes, when it has none.
	Error string `json:"error,omitempty"`
	// MapOps is the binary's map-op flight recorder state, once armed.
	MapOps *BinaryMapOps `json:"mapops,omitempty"`
	// FoundBy is how the binary was first seen (exec-gate, exec-event,
	// scan, request); ProbedAfterNS the time from that sighting to its
	// probes being attached (for exec-gate: how long the exec was held).
	FoundBy       string `json:"found_by,omitempty"`
	ProbedAfterNS int64  `json:"probed_after_ns,omitempty"`
	// LastRun is when a process was last seen running it.
	LastRun time.Time `json:"last_run"`
	// PCLNTab is where its function table was found; ExternalLink says it
	// was linked by the C toolchain (cgo, -linkmode=external).
	PCLNTab      PCLNTab `json:"pclntab"`
	ExternalLink bool    `json:"external_link,omitempty"`
}

// PCLNTab is where a binary's Go function table lies and how it was found
// (symbolizer.Location).
type PCLNTab struct {
	Addr uint64 `json:"addr"`
	Size uint64 `json:"size"`
	// How: "section .gopclntab", "moduledata", "symbol runtime.pclntab"
	// or "scan".
	How string `json:"how"`
}

// BinaryMapOps is the map-op state of one watched binary in `ps`
// (probes.MapOpsStatus).
type BinaryMapOps struct {
	Armed   string         `json:"armed,omitempty"` // binary, pids or empty
	PIDs    []int          `json:"pids,omitempty"`
	Links   int            `json:"links"`
	Probes  []string       `json:"probes,omitempty"`
	Refused []MapOpRefusal `json:"refused,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// MapOpRefusal is a map function that gets no probe, and why.
type MapOpRefusal struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// ArmRequest is the body of POST /v1/mapops/arm and /disarm: an
// executable (every process running it) or one process. For is a Go
// duration ("10m"); empty: until disarmed.
type ArmRequest struct {
	Exe string `json:"exe,omitempty"`
	PID int    `json:"pid,omitempty"`
	For string `json:"for,omitempty"`
}

// ArmStatus is one arm request and what it got: the answer of POST
// /v1/mapops/arm and an element of MapOpsState.Arms (probes.ArmStatus).
type ArmStatus struct {
	Scope string    `json:"scope"` // binary or pids
	Path  string    `json:"path,omitempty"`
	PID   int       `json:"pid,omitempty"`
	Why   string    `json:"why"`
	Until time.Time `json:"until,omitempty"`
	// Links is how many map-op links the request has in the kernel now:
	// one uprobe_multi link for all of Probes, or one perf-event uprobe each
	// on kernels before 6.6 (0 for a binary no process runs yet: it is
	// armed when one starts).
	Links   int            `json:"links"`
	Probes  []string       `json:"probes,omitempty"`
	Refused []MapOpRefusal `json:"refused,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// MapOpsState is the answer of GET /v1/mapops: the flight recorder's mode,
// every arm request, and the map-op links as the daemon counts them and as
// the kernel does.
type MapOpsState struct {
	Mode       string   `json:"mode"`
	OnCrashFor string   `json:"on_crash_for"`
	Always     []string `json:"always,omitempty"`
	Loaded     bool     `json:"loaded"`
	LoadError  string   `json:"load_error,omitempty"`
	// ProgramIDs are the kernel ids of the recording programs: the
	// uprobe_multi one and its perf-event twin.
	ProgramIDs []uint32 `json:"program_ids,omitempty"`
	// Links is the daemon's own count; KernelLinks the kernel's count of
	// links to the map-op programs. They differ only while a change is in
	// flight, or on a leak.
	Links          int         `json:"links"`
	KernelLinks    int         `json:"kernel_links"`
	KernelLinksErr string      `json:"kernel_links_error,omitempty"`
	Arms           []ArmStatus `json:"arms"`
}

// Disarmed is the answer of POST /v1/mapops/disarm.
type Disarmed struct {
	Disarmed int `json:"disarmed"` // arm requests removed
	Links    int `json:"links"`    // map-op links left, all binaries
}

// Process is what a live answer says about its target.
type Process struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	Exe       string `json:"exe"`
	GoVersion string `json:"go_version"`
	MapLayout string `json:"map_layout"`
	Stripped  bool   `json:"stripped"`
	HasDWARF  bool   `json:"has_dwarf"`
}

// Freeze is how a live freeze went: the `freeze` of decode and dump answers.
type Freeze struct {
	// FrozenNS is from SIGSTOP to SIGCONT.
	FrozenNS int64 `json:"frozen_ns"`
	// StopWaitNS is how long every thread took to reach state T.
	StopWaitNS        int64 `json:"stop_wait_ns"`
	AllThreadsStopped bool  `json:"all_threads_stopped"`
	// AlreadyStopped: the process was stopped before we came (a debugger,
	// a job-control stop); we read it as it was and did not signal it.
	AlreadyStopped bool `json:"already_stopped,omitempty"`
	Resumed        bool `json:"resumed"`
	// ResumedBy is what resumed it: done, error, deadline, canceled,
	// shutdown (the daemon is stopping), or crash_capture (a crash capture
	// took the process over meanwhile and resumes it itself).
	ResumedBy   string `json:"resumed_by,omitempty"`
	DeadlineHit bool   `json:"deadline_hit"`
}

// Copy is what a live decode or dump copied while the process was held
// (the `copy` of their answers), and what the parts before and after
// cost: only copying happens while the process is held; decoding,
// unwinding and naming run on the copy after it was resumed.
type Copy struct {
	// Bytes copied from the process in Ranges disjoint ranges by Calls
	// system calls (process_vm_readv, many ranges each).
	Bytes  int64 `json:"bytes"`
	Ranges int   `json:"ranges"`
	Calls  int64 `json:"calls"`
	// CutRanges and CutBytes count what the copy left out (unreadable, or
	// beyond capture.max_bytes); Cuts lists the first.
	CutRanges int   `json:"cut_ranges,omitempty"`
	CutBytes  int64 `json:"cut_bytes,omitempty"`
	Cuts      []Cut `json:"cuts,omitempty"`
	// StaticBytes were added from read-only data read before the stop
	// (the binary's map type descriptors); they are not in Bytes.
	StaticBytes int64 `json:"static_bytes,omitempty"`
	// ReservedBytes were set aside, their pages mapped, before the stop,
	// from an estimate of the copy's size.
	ReservedBytes int64 `json:"reserved_bytes"`
	// PrepareNS is the time before the stop (the binary, the map types,
	// the estimate and the reserve); CopyNS the part of the freeze spent
	// copying; AnalyseNS the decode or unwind of the copy after the
	// resume. Prepare + freeze + analyse is the operation's time in the
	// daemon.
	PrepareNS int64 `json:"prepare_ns"`
	CopyNS    int64 `json:"copy_ns"`
	AnalyseNS int64 `json:"analyse_ns"`
}

// Cut is a range a copy left out, and why: its size bound (Bound), or
// memory that could not be read.
type Cut struct {
	Addr   uint64 `json:"addr"`
	Len    uint64 `json:"len"`
	Bound  bool   `json:"bound,omitempty"`
	Reason string `json:"reason"`
}

// DecodeRequest is the body of POST /v1/decode.
type DecodeRequest struct {
	PID  int    `json:"pid"`
	Addr uint64 `json:"addr"`
	// TypeAddr is the map type descriptor; 0: find it.
	TypeAddr uint64 `json:"type_addr,omitempty"`
	// Keys returns raw keys and values (may be secrets).
	Keys bool `json:"keys,omitempty"`
	// Summary leaves out the per-table list of a Swiss map (hundreds of
	// kilobytes for a large one), which the CLI's text output does not
	// show; the counts and statistics stay.
	Summary bool `json:"summary,omitempty"`
}

// TypeCandidate is a map type descriptor whose geometry fits a map.
type TypeCandidate struct {
	Addr   uint64 `json:"addr"`
	GoType string `json:"go_type,omitempty"`
	// Unit is its bucket (classic) or group (Swiss) size in bytes.
	Unit uint64 `json:"unit"`
}

// DumpRequest is the body of POST /v1/dump.
type DumpRequest struct {
	PID int `json:"pid"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
