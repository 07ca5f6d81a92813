package exporter

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// ErrInvalidCrash marks a report that can never become a trace (no id, no
// time). Run drops such a crash instead of retrying it forever.
var ErrInvalidCrash = errors.New("invalid crash report")

// ScopeName is the instrumentation scope of every mapsentry span.
const ScopeName = "github.com/mapsentry/mapsentry/exporter"

// CrashSpans maps c to the spans of its trace, root first. The spans are
// built directly (not through a Tracer) so that ids and timestamps are
// exactly those of the report: the same report always gives the same
// spans, byte for byte, which is what makes re-export idempotent.
func CrashSpans(c report.Crash) ([]sdktrace.ReadOnlySpan, error) {
	return viewSpans(fromReport(c))
}

// viewSpans builds the trace of v: the root span for the whole freeze,
// then its children in time order (freeze, capture phases, capture,
// resume).
func viewSpans(v crashView) ([]sdktrace.ReadOnlySpan, error) {
	start, end, err := crashInterval(v)
	if err != nil {
		return nil, err
	}
	b := newSpanBuilder(v)
	root := b.root(v, start, end)
	var children []tracetest.SpanStub
	if freeze, ok := b.freezeSpan(v, start); ok {
		children = append(children, freeze)
	}
	children = append(children, b.captureSpans(v, start, end)...)
	for _, c := range children {
		if c.Parent.Equal(root.SpanContext) {
			root.ChildSpanCount++
		}
	}
	return tracetest.SpanStubs(append([]tracetest.SpanStub{root}, children...)).Snapshots(), nil
}

// crashInterval is the root span's time: from the first fatal event (the
// first thread stopped) for as long as the process was held frozen. A
// crash with no id or no time can never be placed in a trace: that is
// ErrInvalidCrash, which Run drops instead of retrying.
func crashInterval(v crashView) (start, end time.Time, err error) {
	if v.ID == "" {
		return time.Time{}, time.Time{}, fmt.Errorf("map crash to spans: %w: empty id", ErrInvalidCrash)
	}
	start = firstFatalTime(v.Crash)
	if start.IsZero() {
		return time.Time{}, time.Time{}, fmt.Errorf("map crash %s to spans: %w: no fatal event time and no capture time", v.ID, ErrInvalidCrash)
	}
	end = start
	if v.Freeze.FrozenNS > 0 {
		end = start.Add(time.Duration(v.Freeze.FrozenNS))
	}
	return start, end, nil
}

// spanBuilder owns what every span of one crash's trace shares: the trace
// id and span ids derived from the crash id (so that re-export gives the
// same ids), the process resource and the instrumentation scope.
type spanBuilder struct {
	crashID string
	traceID trace.TraceID
	rootCtx trace.SpanContext
	res     *resource.Resource
	scope   instrumentation.Scope
}

func newSpanBuilder(v crashView) spanBuilder {
	b := spanBuilder{
		crashID: v.ID,
		traceID: TraceID(v.ID),
		res:     crashResource(v.Crash),
		scope:   instrumentation.Scope{Name: ScopeName},
	}
	b.rootCtx = b.spanContext("root")
	return b
}

// spanContext is the context of the span at path (e.g. "capture/0/map
// decode"): its id is a hash of the crash id and the path.
func (b spanBuilder) spanContext(path string) trace.SpanContext {
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    b.traceID,
		SpanID:     spanID(b.crashID, path),
		TraceFlags: trace.FlagsSampled,
	})
}

// root is the crash's root span, named after the diagnosis or the fatal
// kind and in error with the runtime's message; viewSpans counts its
// children.
func (b spanBuilder) root(v crashView, start, end time.Time) tracetest.SpanStub {
	return tracetest.SpanStub{
		Name:                 rootSpanName(v.Crash),
		SpanContext:          b.rootCtx,
		SpanKind:             trace.SpanKindInternal,
		StartTime:            start,
		EndTime:              end,
		Attributes:           rootAttributes(v),
		Events:               rootEvents(v, start),
		Status:               sdktrace.Status{Code: codes.Error, Description: v.Fatal.Message},
		Resource:             b.res,
		InstrumentationScope: b.scope,
	}
}

// child is a span at path under parent, from s to e.
func (b spanBuilder) child(name, path string, parent trace.SpanContext, s, e time.Time, attrs ...attribute.KeyValue) tracetest.SpanStub {
	return tracetest.SpanStub{
		Name:                 name,
		SpanContext:          b.spanContext(path),
		Parent:               parent,
		SpanKind:             trace.SpanKindInternal,
		StartTime:            s,
		EndTime:              e,
		Attributes:           attrs,
		Resource:             b.res,
		InstrumentationScope: b.scope,
	}
}

// freezeSpan runs from the first probe hit (the crashing thread held)
// until every thread of the process was seen stopped; a report without
// that time has no freeze span.
func (b spanBuilder) freezeSpan(v crashView, start time.Time) (tracetest.SpanStub, bool) {
	stopped := time.Duration(v.Freeze.AllThreadsStoppedNS)
	if stopped <= 0 {
		return tracetest.SpanStub{}, false
	}
	return b.child(spanFreeze, "freeze", b.rootCtx, start, start.Add(stopped),
		attribute.Bool(attrFreezeStopped, v.Freeze.AllThreadsStopped),
		attribute.Bool(attrFreezeDeadline, v.Freeze.DeadlineHit)), true
}

// captureSpans are the snapshot of the stopped process: its measured
// sub-phases, the capture span itself, and resume, what is left of the
// freeze after it (storing the report, release in BPF, SIGCONT). A report
// without a capture duration has none of them.
//
// The daemon measures all_threads_stopped_ns, capture.duration_ns and
// frozen_ns alike from the moment it saw the first fatal event
// (daemon/internal/capture), so the capture runs from the threads being
// stopped to start+duration.
func (b spanBuilder) captureSpans(v crashView, start, end time.Time) []tracetest.SpanStub {
	d := time.Duration(v.Capture.DurationNS)
	if d <= 0 {
		return nil
	}
	cs := start.Add(time.Duration(v.Freeze.AllThreadsStoppedNS))
	ce := start.Add(d)
	if !ce.After(cs) { // a report measuring the capture on its own
		ce = cs.Add(d)
	}
	capture := b.child(spanCapture, "capture", b.rootCtx, cs, ce, captureAttributes(v)...)
	spans := b.phaseSpans(v, &capture, cs)
	spans = append(spans, capture)
	if v.Freeze.FrozenNS > 0 && end.After(ce) {
		spans = append(spans, b.child(spanResume, "resume", b.rootCtx, ce, end,
			attribute.Bool(attrFreezeResumed, v.Freeze.Resumed)))
	}
	return spans
}

// captureAttributes are what the capture read and what it could not.
func captureAttributes(v crashView) []attribute.KeyValue {
	var attrs []attribute.KeyValue
	if v.Capture.BytesRead > 0 {
		attrs = append(attrs, attribute.Int64(attrCaptureBytesRead, v.Capture.BytesRead))
	}
	if len(v.Capture.Missing) > 0 {
		attrs = append(attrs, attribute.StringSlice(attrCaptureMissing, v.Capture.Missing))
	}
	if len(v.Capture.Errors) > 0 {
		attrs = append(attrs, attribute.StringSlice(attrCaptureErrors, v.Capture.Errors))
	}
	return attrs
}

// phaseSpans are the capture's measured sub-phases, children of capture
// (whose child count they raise), placed by their offset from cs.
func (b spanBuilder) phaseSpans(v crashView, capture *tracetest.SpanStub, cs time.Time) []tracetest.SpanStub {
	var spans []tracetest.SpanStub
	for i, p := range v.Phases {
		ps := cs.Add(p.Offset)
		spans = append(spans, b.child(p.Name, fmt.Sprintf("capture/%d/%s", i, p.Name), capture.SpanContext,
			ps, ps.Add(p.Duration), phaseAttributes(v, p)...))
		capture.ChildSpanCount++
	}
	return spans
}

// phaseAttributes count what a phase produced: the goroutines dumped, the
// anomalies the map decode found.
func phaseAttributes(v crashView, p phaseView) []attribute.KeyValue {
	var attrs []attribute.KeyValue
	if p.Name == spanGoroutineDump && len(v.Goroutines) > 0 {
		attrs = append(attrs, attribute.Int(attrGoroutineCount, len(v.Goroutines)))
	}
	if p.Name == spanMapDecode && v.Map != nil {
		attrs = append(attrs, attribute.Int(attrMapAnomalies, len(v.Map.Anomalies)))
	}
	return attrs
}

// spanName names the root span after the fatal kind, so that Jaeger's
// operation list groups crashes by kind.
func spanName(k report.Kind) string {
	if k == "" {
		return string(report.KindOtherFatal)
	}
	return string(k)
}

// firstFatalTime is the wall time of the earliest fatal event: the instant
// the first thread was stopped. Events are sorted by kernel time, but the
// minimum is taken anyway so that an unsorted report still maps correctly.
func firstFatalTime(c report.Crash) time.Time {
	var first time.Time
	for _, e := range c.Fatal.Events {
		if !e.WallTime.IsZero() && (first.IsZero() || e.WallTime.Before(first)) {
			first = e.WallTime
		}
	}
	if first.IsZero() && !c.CapturedAt.IsZero() {
		first = c.CapturedAt.Add(-time.Duration(c.Freeze.FrozenNS))
	}
	return first
}

// firstEvent is the earliest fatal event: the crashing thread.
func firstEvent(c report.Crash) (report.Event, bool) {
	var first report.Event
	found := false
	for _, e := range c.Fatal.Events {
		if !found || e.KTimeNS < first.KTimeNS {
			first, found = e, true
		}
	}
	return first, found
}

// ServiceName is the service.name of a crashed process: its systemd unit
// (without ".service"), else its container (short id), else the base name
// of its executable.
func ServiceName(p report.Process) string {
	switch {
	case p.Unit != "":
		return strings.TrimSuffix(p.Unit, ".service")
	case p.Container != "":
		return shortContainerID(p.Container)
	case p.Exe != "":
		return filepath.Base(p.Exe)
	default:
		return "unknown_service"
	}
}

// shortContainerID shortens a 64-hex-digit container id to the 12 digits
// that docker and podman print; anything else (a name) is kept.
func shortContainerID(s string) string {
	if len(s) == 64 && strings.Trim(s, "0123456789abcdef") == "" {
		return s[:12]
	}
	return s
}

func crashResource(c report.Crash) *resource.Resource {
	p := c.Process
	attrs := []attribute.KeyValue{
		attribute.String(attrServiceName, ServiceName(p)),
		attribute.String(attrServiceInstanceID, fmt.Sprintf("%s/%d/%d", c.Host, p.PID, p.StartTime)),
		attribute.Int(attrProcessPID, p.PID),
		attribute.String(attrRuntimeName, "go"),
	}
	if p.NSPID != 0 {
		attrs = append(attrs, attribute.Int(attrProcessVPID, p.NSPID))
	}
	if p.Exe != "" {
		attrs = append(attrs,
			attribute.String(attrProcessExePath, p.Exe),
			attribute.String(attrProcessExeName, filepath.Base(p.Exe)))
	}
	// The daemon redacts the command line before the report is stored; an
	// empty one means redacted or unknown, and nothing is exported.
	if len(p.Cmdline) > 0 {
		attrs = append(attrs, attribute.String(attrProcessCmdline, strings.Join(p.Cmdline, " ")))
	}
	if p.GoVersion != "" {
		attrs = append(attrs, attribute.String(attrRuntimeVersion, p.GoVersion))
	}
	if c.Host != "" {
		attrs = append(attrs, attribute.String(attrHostName, c.Host))
	}
	if p.Container != "" {
		attrs = append(attrs, attribute.String(attrContainerID, p.Container))
	}
	attrs = append(attrs, attribute.Int64(attrProcStartTime, int64(p.StartTime)))
	if p.BuildID != "" {
		attrs = append(attrs, attribute.String(attrProcBuildID, p.BuildID))
	}
	if p.MapLayout != "" {
		attrs = append(attrs, attribute.String(attrProcMapLayout, p.MapLayout))
	}
	attrs = append(attrs, attribute.Bool(attrProcStripped, p.Stripped))
	if p.Cgroup != "" {
		attrs = append(attrs, attribute.String(attrProcCgroup, p.Cgroup))
	}
	if p.Unit != "" {
		attrs = append(attrs, attribute.String(attrProcUnit, p.Unit))
	}
	return resource.NewSchemaless(attrs...)
}

// exceptionType follows what the Go runtime prints before the message.
func exceptionType(k report.Kind) string {
	if k == report.KindUnrecoveredPanic {
		return "panic"
	}
	return "fatal error"
}

// rootAttributes lists the root span's attributes most useful first: Jaeger
// shows them in this order. Each step appends one section of the report.
func rootAttributes(v crashView) []attribute.KeyValue {
	attrs := append(diagnosisAttributes(v.Crash),
		attribute.String(attrExceptionType, exceptionType(v.Fatal.Kind)),
		attribute.String(attrExceptionMessage, v.Fatal.Message),
		attribute.String(attrFatalKind, spanName(v.Fatal.Kind)),
	)
	first, haveFirst := firstEvent(v.Crash)
	crashing := crashingGoroutine(v.Goroutines, first, haveFirst)
	attrs = appendFatalSite(attrs, v, crashing, first, haveFirst)
	attrs = appendFatalEvents(attrs, v, first, haveFirst)
	attrs = appendMapAttributes(attrs, v.Map)
	attrs = appendGoroutineAttributes(attrs, v)
	attrs = appendFreezeAttributes(attrs, v)
	attrs = appendCrashIdentity(attrs, v)
	// Last: it is long, and Jaeger shows it as a multi-line value.
	if crashing != nil {
		attrs = append(attrs, attribute.String(attrExceptionStack, traceback(crashing)))
	}
	return attrs
}

// appendFatalSite adds the code.* attributes of the program line that
// made the runtime give up (fatalSite). Without one, code.function falls
// back to what the probe saw: the caller of the fatal function, else the
// fatal function itself, with no file or line.
func appendFatalSite(attrs []attribute.KeyValue, v crashView, crashing *symbolizer.Goroutine, first report.Event, haveFirst bool) []attribute.KeyValue {
	if site, ok := fatalSite(v, crashing); ok {
		attrs = append(attrs, attribute.String(attrCodeFunction, site.Function))
		if site.File != "" {
			attrs = append(attrs, attribute.String(attrCodeFilepath, site.File))
		}
		if site.Line > 0 {
			attrs = append(attrs, attribute.Int(attrCodeLineno, site.Line))
		}
		return attrs
	}
	if !haveFirst {
		return attrs
	}
	fn := first.CallerFunction
	if fn == "" {
		fn = first.Function
	}
	if fn != "" {
		attrs = append(attrs, attribute.String(attrCodeFunction, fn))
	}
	return attrs
}

// appendFatalEvents adds the crashing thread (the first fatal event's
// thread, goroutine and functions) and how many events and threads hit
// the fatal path.
func appendFatalEvents(attrs []attribute.KeyValue, v crashView, first report.Event, haveFirst bool) []attribute.KeyValue {
	if haveFirst {
		attrs = append(attrs,
			attribute.Int(attrThreadID, first.TID),
			attribute.Int64(attrGoroutineID, first.Goid))
		if first.Function != "" {
			attrs = append(attrs, attribute.String(attrFatalFunction, first.Function))
		}
		if first.CallerFunction != "" {
			attrs = append(attrs, attribute.String(attrFatalCaller, first.CallerFunction))
		}
	}
	return append(attrs,
		attribute.Int(attrFatalEvents, len(v.Fatal.Events)),
		attribute.Int(attrFatalThreads, distinctThreads(v.Fatal.Events)))
}

// appendMapAttributes adds the decoded map, when the capture found one:
// address, type and layout, its header fields, how it was found, and what
// the decode saw (flags, entries, anomalies).
func appendMapAttributes(attrs []attribute.KeyValue, m *mapView) []attribute.KeyValue {
	if m == nil {
		return attrs
	}
	attrs = append(attrs, attribute.String(attrMapAddr, fmt.Sprintf("%#x", m.Addr)))
	if m.GoType != "" {
		attrs = append(attrs, attribute.String(attrMapGoType, m.GoType))
	}
	if m.Layout != "" {
		attrs = append(attrs, attribute.String(attrMapLayout, m.Layout))
	}
	for _, f := range m.Header {
		attrs = append(attrs, fieldAttribute(attrMapHeaderPrefix+f.Name, f.Value))
	}
	for _, f := range m.More {
		attrs = append(attrs, fieldAttribute(f.Name, f.Value))
	}
	if len(m.Flags) > 0 {
		attrs = append(attrs, attribute.StringSlice(attrMapFlags, m.Flags))
	}
	return append(attrs,
		attribute.Int64(attrMapEntries, m.EntriesFound),
		attribute.Bool(attrMapTruncated, m.Truncated),
		attribute.Int(attrMapAnomalies, len(m.Anomalies)))
}

// appendGoroutineAttributes adds why no partner was found (the partners
// themselves are events) and how many goroutines were dumped.
func appendGoroutineAttributes(attrs []attribute.KeyValue, v crashView) []attribute.KeyValue {
	if len(v.Partners) == 0 && v.PartnersNote != "" {
		attrs = append(attrs, attribute.String(attrPartnersNote, v.PartnersNote))
	}
	if len(v.Goroutines) > 0 {
		attrs = append(attrs, attribute.Int(attrGoroutineCount, len(v.Goroutines)))
	}
	return attrs
}

// appendFreezeAttributes adds how the process was held and released, how
// long the capture took, how the process died, and what the capture
// missed.
func appendFreezeAttributes(attrs []attribute.KeyValue, v crashView) []attribute.KeyValue {
	attrs = append(attrs,
		attribute.Int64(attrFreezeFrozenNS, v.Freeze.FrozenNS),
		attribute.Bool(attrFreezeStopped, v.Freeze.AllThreadsStopped),
		attribute.Int64(attrFreezeStoppedNS, v.Freeze.AllThreadsStoppedNS),
		attribute.Bool(attrFreezeResumed, v.Freeze.Resumed),
		attribute.Bool(attrFreezeDeadline, v.Freeze.DeadlineHit),
		attribute.Int64(attrCaptureDuration, v.Capture.DurationNS))
	if v.Freeze.ExitStatus != nil {
		attrs = append(attrs, attribute.Int(attrExitStatus, *v.Freeze.ExitStatus))
	}
	if v.Freeze.ExitSignal != nil {
		attrs = append(attrs, attribute.Int(attrExitSignal, *v.Freeze.ExitSignal))
	}
	if len(v.Capture.Missing) > 0 {
		attrs = append(attrs, attribute.StringSlice(attrCaptureMissing, v.Capture.Missing))
	}
	return attrs
}

// appendCrashIdentity adds what finds the report again: its id, schema and
// capture time.
func appendCrashIdentity(attrs []attribute.KeyValue, v crashView) []attribute.KeyValue {
	attrs = append(attrs,
		attribute.String(attrCrashID, v.ID),
		attribute.Int(attrSchema, v.Schema))
	if !v.CapturedAt.IsZero() {
		attrs = append(attrs, attribute.String(attrCapturedAt, v.CapturedAt.UTC().Format(time.RFC3339Nano)))
	}
	return attrs
}

func distinctThreads(events []report.Event) int {
	seen := make(map[int]struct{}, len(events))
	for _, e := range events {
		seen[e.TID] = struct{}{}
	}
	return len(seen)
}

func fieldAttribute(key string, v any) attribute.KeyValue {
	switch x := v.(type) {
	case int:
		return attribute.Int(key, x)
	case int64:
		return attribute.Int64(key, x)
	case uint8:
		return attribute.Int64(key, int64(x))
	case uint16:
		return attribute.Int64(key, int64(x))
	case uint32:
		return attribute.Int64(key, int64(x))
	case uint64:
		// OTLP has no unsigned integers; hex keeps addresses and seeds exact.
		return attribute.String(key, fmt.Sprintf("%#x", x))
	case bool:
		return attribute.Bool(key, x)
	case string:
		return attribute.String(key, x)
	default:
		return attribute.String(key, fmt.Sprint(x))
	}
}

// fatalSite is the program line that made the runtime give up: the map
// call site the capture found, else the innermost frame of the crashing
// goroutine outside the runtime (for a map race, the map write).
func fatalSite(v crashView, g *symbolizer.Goroutine) (symbolizer.Frame, bool) {
	if v.Crash.Map != nil && v.Crash.Map.CallSite != nil && v.Crash.Map.CallSite.Function != "" {
		return *v.Crash.Map.CallSite, true
	}
	if g == nil {
		return symbolizer.Frame{}, false
	}
	for _, f := range g.Frames {
		if !isRuntimeFunction(f.Function) {
			return f, true
		}
	}
	return symbolizer.Frame{}, false
}

func isRuntimeFunction(fn string) bool {
	return strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/runtime/")
}

// traceback renders g as the runtime prints it (symbolizer's format).
func traceback(g *symbolizer.Goroutine) string {
	var b strings.Builder
	if err := symbolizer.WriteTraceback(&b, []symbolizer.Goroutine{*g}); err != nil {
		return "" // a strings.Builder does not fail
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// rootEvents are the root span's events: every fatal event, then the
// partner goroutines, then the map's anomalies.
func rootEvents(v crashView, start time.Time) []sdktrace.Event {
	events := fatalEvents(v, start)
	events = append(events, partnerEvents(v, start)...)
	return append(events, anomalyEvents(v, start)...)
}

// fatalEvents are the probe's fatal events, one per thread hit, at their
// wall time (start when the report has none): where each thread entered
// the fatal path, and whether it did so after the process was released.
func fatalEvents(v crashView, start time.Time) []sdktrace.Event {
	var events []sdktrace.Event
	for _, e := range v.Fatal.Events {
		t := e.WallTime
		if t.IsZero() {
			t = start
		}
		attrs := []attribute.KeyValue{
			attribute.Int(attrThreadID, e.TID),
			attribute.Int64(attrGoroutineID, e.Goid),
		}
		if e.Function != "" {
			attrs = append(attrs, attribute.String(attrCodeFunction, e.Function))
		}
		if e.CallerFunction != "" {
			attrs = append(attrs, attribute.String(attrFatalCaller, e.CallerFunction))
		}
		if e.Message != "" {
			attrs = append(attrs, attribute.String(attrExceptionMessage, e.Message))
		}
		attrs = append(attrs,
			attribute.String(attrEventPC, fmt.Sprintf("%#x", e.PC)),
			attribute.Int64(attrEventKTime, int64(e.KTimeNS)))
		if e.Caller != 0 {
			attrs = append(attrs, attribute.String(attrEventCaller, fmt.Sprintf("%#x", e.Caller)))
		}
		if e.AfterRelease {
			attrs = append(attrs, attribute.Bool(attrEventAfterRel, true))
		}
		events = append(events, sdktrace.Event{Name: eventFatal, Time: t, Attributes: attrs})
	}
	return events
}

// partnerEvents are the other goroutines found on the map, each placed
// when it was seen there (Ago before start).
func partnerEvents(v crashView, start time.Time) []sdktrace.Event {
	var events []sdktrace.Event
	for _, p := range v.Partners {
		events = append(events, sdktrace.Event{Name: eventPartner, Time: start.Add(-p.Ago), Attributes: partnerAttributes(p)})
	}
	return events
}

// partnerAttributes say who the partner is (goroutine, thread), what it
// did to the map and where in the code, and how sure the search is
// (evidence, rank); unknown parts are left out.
func partnerAttributes(p partnerView) []attribute.KeyValue {
	attrs := []attribute.KeyValue{attribute.Int64(attrGoroutineID, p.Goid)}
	if p.TID != 0 {
		attrs = append(attrs, attribute.Int(attrThreadID, p.TID))
	}
	if p.Op != "" {
		attrs = append(attrs, attribute.String(attrPartnerOp, p.Op))
	}
	if p.MapFunction != "" {
		attrs = append(attrs, attribute.String(attrPartnerMapFunc, p.MapFunction))
	}
	if p.Function != "" {
		attrs = append(attrs, attribute.String(attrCodeFunction, p.Function))
	}
	if p.File != "" {
		attrs = append(attrs, attribute.String(attrCodeFilepath, p.File))
	}
	if p.Line > 0 {
		attrs = append(attrs, attribute.Int(attrCodeLineno, p.Line))
	}
	if p.Evidence != "" {
		attrs = append(attrs, attribute.String(attrPartnerEvidence, p.Evidence))
	}
	if p.Rank > 0 {
		attrs = append(attrs, attribute.Int(attrPartnerRank, p.Rank))
	}
	if p.Ago > 0 {
		attrs = append(attrs, attribute.Int64(attrPartnerAgoNS, p.Ago.Nanoseconds()))
	}
	return attrs
}

// anomalyEvents are what the map decode found wrong, all at the moment the
// decode ended: the threads stopped, plus the end of the map decode phase
// when it was measured.
func anomalyEvents(v crashView, start time.Time) []sdktrace.Event {
	if v.Map == nil {
		return nil
	}
	at := start.Add(time.Duration(v.Freeze.AllThreadsStoppedNS))
	for _, p := range v.Phases {
		if p.Name == spanMapDecode {
			at = at.Add(p.Offset + p.Duration)
		}
	}
	var events []sdktrace.Event
	for _, a := range v.Map.Anomalies {
		attrs := []attribute.KeyValue{attribute.String(attrAnomalyCode, a.Code)}
		if a.Severity != "" {
			attrs = append(attrs, attribute.String(attrAnomalySeverity, a.Severity))
		}
		if a.Where != "" {
			attrs = append(attrs, attribute.String(attrAnomalyWhere, a.Where))
		}
		if a.Detail != "" {
			attrs = append(attrs, attribute.String(attrAnomalyDetail, a.Detail))
		}
		events = append(events, sdktrace.Event{Name: eventAnomaly, Time: at, Attributes: attrs})
	}
	return events
}
