package exporter

// Attribute names. Standard OpenTelemetry semantic-convention names are used
// where one exists; everything else lives under mapsentry.* and is
// documented in docs/export.md — keep the two in step.
//
// The code.* names are the long-standing code.function / code.filepath /
// code.lineno, which Jaeger and most back ends display today.
const (
	// Resource, semantic conventions.
	attrServiceName       = "service.name"
	attrServiceInstanceID = "service.instance.id"
	attrProcessPID        = "process.pid"
	attrProcessVPID       = "process.vpid" // the PID inside its PID namespace
	attrProcessExePath    = "process.executable.path"
	attrProcessExeName    = "process.executable.name"
	attrProcessCmdline    = "process.command_line"
	attrRuntimeName       = "process.runtime.name"
	attrRuntimeVersion    = "process.runtime.version"
	attrHostName          = "host.name"
	attrContainerID       = "container.id"

	// Resource, mapsentry.
	attrProcStartTime = "mapsentry.process.start_time"
	attrProcBuildID   = "mapsentry.process.build_id"
	attrProcMapLayout = "mapsentry.process.map_layout"
	attrProcStripped  = "mapsentry.process.stripped"
	attrProcCgroup    = "mapsentry.process.cgroup"
	attrProcUnit      = "mapsentry.process.systemd_unit"

	// Spans and events, semantic conventions.
	attrExceptionType    = "exception.type"
	attrExceptionMessage = "exception.message"
	attrExceptionStack   = "exception.stacktrace"
	attrThreadID         = "thread.id"
	attrCodeFunction     = "code.function"
	attrCodeFilepath     = "code.filepath"
	attrCodeLineno       = "code.lineno"

	// Root span, mapsentry.
	attrCrashID          = "mapsentry.crash.id"
	attrSchema           = "mapsentry.report.schema"
	attrCapturedAt       = "mapsentry.crash.captured_at"
	attrFatalKind        = "mapsentry.fatal.kind"
	attrFatalFunction    = "mapsentry.fatal.function"
	attrFatalCaller      = "mapsentry.fatal.caller_function"
	attrFatalEvents      = "mapsentry.fatal.events"
	attrFatalThreads     = "mapsentry.fatal.threads"
	attrGoroutineID      = "mapsentry.goroutine.id"
	attrFreezeFrozenNS   = "mapsentry.freeze.frozen_ns"
	attrFreezeStopped    = "mapsentry.freeze.all_threads_stopped"
	attrFreezeStoppedNS  = "mapsentry.freeze.all_threads_stopped_ns"
	attrFreezeResumed    = "mapsentry.freeze.resumed"
	attrFreezeDeadline   = "mapsentry.freeze.deadline_hit"
	attrExitStatus       = "mapsentry.process.exit_status"
	attrExitSignal       = "mapsentry.process.exit_signal"
	attrCaptureDuration  = "mapsentry.capture.duration_ns"
	attrCaptureBytesRead = "mapsentry.capture.bytes_read"
	attrCaptureErrors    = "mapsentry.capture.errors"
	attrCaptureMissing   = "mapsentry.capture.missing"
	attrGoroutineCount   = "mapsentry.goroutines.count"

	// Fatal-event span events.
	attrEventPC     = "mapsentry.fatal.pc"
	attrEventCaller = "mapsentry.fatal.caller_pc"
	attrEventKTime  = "mapsentry.fatal.ktime_ns"

	// Map (root span attributes; header fields are mapsentry.map.header.<name>).
	attrMapAddr         = "mapsentry.map.addr"
	attrMapGoType       = "mapsentry.map.go_type"
	attrMapLayout       = "mapsentry.map.layout"
	attrMapFlags        = "mapsentry.map.flags"
	attrMapEntries      = "mapsentry.map.entries_found"
	attrMapTruncated    = "mapsentry.map.truncated"
	attrMapAnomalies    = "mapsentry.map.anomalies"
	attrMapHeaderPrefix = "mapsentry.map.header."
	attrMapFoundBy      = "mapsentry.map.found_by"
	attrMapOp           = "mapsentry.map.op"
	attrMapFunction     = "mapsentry.map.function"
	attrMapError        = "mapsentry.map.error"
	attrMapTypeSource   = "mapsentry.map.type_source"
	attrMapGrowthSame   = "mapsentry.map.growth.same_size"
	attrMapGrowthPermil = "mapsentry.map.growth.progress_permil"

	// Partner goroutine span events.
	attrPartnerOp       = "mapsentry.partner.op"
	attrPartnerEvidence = "mapsentry.partner.evidence"
	attrPartnerAgoNS    = "mapsentry.partner.ago_ns"
	attrPartnerMapFunc  = "mapsentry.partner.map_function"
	attrPartnerRank     = "mapsentry.partner.rank"
	attrPartnersNote    = "mapsentry.partners.note"
	attrEventAfterRel   = "mapsentry.fatal.after_release"

	// Map anomaly span events.
	attrAnomalyCode     = "mapsentry.anomaly.code"
	attrAnomalySeverity = "mapsentry.anomaly.severity"
	attrAnomalyWhere    = "mapsentry.anomaly.where"
	attrAnomalyDetail   = "mapsentry.anomaly.detail"
)

// Span and event names.
const (
	spanFreeze        = "freeze"
	spanCapture       = "capture"
	spanGoroutineDump = "goroutine dump"
	spanMapDecode     = "map decode"
	spanPartnerSearch = "partner search"
	spanResume        = "resume"

	eventFatal   = "fatal"
	eventPartner = "partner goroutine"
	eventAnomaly = "map anomaly"
)
