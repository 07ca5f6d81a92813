package exporter

import (
	"time"

	"github.com/mapsentry/mapsentry/report"
)

// crashView is everything the trace mapping reads. fromReport is the only
// function that knows where in report.Crash each part lives, so when the
// report grows a field (the decoded map from hmapdecode, goroutines from
// symbolizer, partners, per-phase capture timings) it is wired here, in one
// place, and the mapping already knows what to do with it. Absent parts are
// nil or empty and simply produce no span, event or attribute.
type crashView struct {
	report.Crash

	// Phases are capture sub-phases with measured durations (goroutine dump,
	// map decode), children of the capture span.
	Phases []phaseView
	// Map is the decoded map the fatal error was about, nil when not decoded.
	Map *mapView
	// Partners are the other goroutines found on the map.
	Partners []partnerView
	// Goroutines are all goroutines of the frozen process, symbolized.
	Goroutines []goroutineView
}

type phaseView struct {
	Name string
	// Offset is the phase start relative to the capture start.
	Offset   time.Duration
	Duration time.Duration
}

type mapView struct {
	Addr   uint64
	GoType string
	Layout string
	// Header holds the decoded header fields in display order, each
	// exported as mapsentry.map.header.<Name>. Values are int64, uint64,
	// bool or string.
	Header       []field
	Flags        []string
	EntriesFound int64
	Truncated    bool
	Anomalies    []anomalyView
}

type field struct {
	Name  string
	Value any
}

type anomalyView struct {
	Code, Severity, Where, Detail string
}

type partnerView struct {
	Goid     int64
	TID      int
	Op       string
	Function string
	File     string
	Line     int
	Evidence string
	// Ago is how long before the first fatal event the partner was seen on
	// the map; 0 when unknown.
	Ago time.Duration
}

type goroutineView struct {
	ID         int64
	Status     string
	WaitReason string
	Frames     []frameView
	CreatedBy  *frameView
	// CreatorID is the goroutine that created this one, 0 when unknown.
	CreatorID int64
}

type frameView struct {
	Function string
	File     string
	Line     int
}

// fromReport builds the view of c. report.Crash (schema 1) carries no map,
// partners, goroutines or capture phases yet; when it does, fill them here.
func fromReport(c report.Crash) crashView {
	return crashView{Crash: c}
}
