package exporter

import (
	"time"

	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// crashView is everything the trace mapping reads. fromReport is the only
// function that knows where in report.Crash each optional part lives, so a
// new report field is wired here, in one place. Absent parts are nil or
// empty and simply produce no span, event or attribute.
type crashView struct {
	report.Crash

	// Phases are capture sub-phases with measured durations (map decode,
	// goroutine dump, partner search), children of the capture span, from
	// the report's capture.stages.
	Phases []phaseView
	// Map is the decoded map the fatal error was about, nil when not found.
	Map *mapView
	// Partners are the other goroutines found on the map.
	Partners []partnerView
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
	// exported as mapsentry.map.header.<Name>.
	Header       []field
	Flags        []string
	EntriesFound int64
	Truncated    bool
	Anomalies    []anomalyView
	// More holds the other mapsentry.map.* attributes (how the map was
	// found, decode errors), already named.
	More []field
}

type field struct {
	Name  string
	Value any
}

type anomalyView struct {
	Code, Severity, Where, Detail string
}

type partnerView struct {
	Goid        int64
	TID         int
	Op          string
	MapFunction string
	Function    string
	File        string
	Line        int
	Evidence    string
	Rank        int
	// Ago is how long before the first fatal event the partner was seen on
	// the map; 0 when unknown.
	Ago time.Duration
}

// fromReport builds the view of c.
func fromReport(c report.Crash) crashView {
	v := crashView{Crash: c}
	// Stage starts count from the first fatal event like the freeze; the
	// capture span starts when every thread was stopped.
	for _, st := range c.Capture.Stages {
		name := map[string]string{"map": spanMapDecode, "goroutines": spanGoroutineDump, "partners": spanPartnerSearch}[st.Name]
		if name == "" {
			continue
		}
		off := time.Duration(st.StartNS - c.Freeze.AllThreadsStoppedNS)
		if off < 0 {
			off = 0
		}
		v.Phases = append(v.Phases, phaseView{Name: name, Offset: off, Duration: time.Duration(st.DurationNS)})
	}
	if c.Map != nil {
		v.Map = mapFromReport(c.Map)
	}
	for _, p := range c.Partners {
		v.Partners = append(v.Partners, partnerView{
			Goid: p.Goid, TID: p.TID, Op: p.Op, MapFunction: p.MapFunction,
			Function: p.Function, File: p.File, Line: p.Line,
			Evidence: p.Evidence, Rank: p.Rank, Ago: time.Duration(p.AgoNS),
		})
	}
	return v
}

func mapFromReport(m *report.Map) *mapView {
	v := &mapView{Addr: m.Addr}
	add := func(name string, val any) { v.More = append(v.More, field{name, val}) }
	if m.FoundBy != "" {
		add(attrMapFoundBy, m.FoundBy)
	}
	if m.Op != "" {
		add(attrMapOp, m.Op)
	}
	if m.MapFunction != "" {
		add(attrMapFunction, m.MapFunction)
	}
	if m.Error != "" {
		add(attrMapError, m.Error)
	}
	r := m.Result
	if r == nil { // found (or not) but not decoded
		return v
	}
	if r.Addr != 0 {
		v.Addr = r.Addr
	}
	v.GoType, v.Layout = r.GoType, r.Layout
	v.Flags = r.Flags
	v.EntriesFound = r.Stats.EntriesFound
	v.Truncated = r.Truncated
	if r.TypeSource != "" {
		add(attrMapTypeSource, r.TypeSource)
	}
	v.Header = headerFields(r)
	if g := r.Growth; g != nil && g.Growing {
		add(attrMapGrowthSame, g.SameSize)
		add(attrMapGrowthPermil, g.ProgressPermil)
	}
	for _, a := range r.Anomalies {
		v.Anomalies = append(v.Anomalies, anomalyView{Code: a.Code, Severity: string(a.Severity), Where: a.Where, Detail: a.Detail})
	}
	return v
}

// headerFields lists the header as the runtime names its fields
// (runtime.hmap for classic maps, internal/runtime/maps.Map for Swiss).
// Pointers are hex; the hash seed is left out (it only helps an attacker).
func headerFields(r *hmapdecode.Result) []field {
	f := []field{{"count", r.Count}}
	if h := r.Classic; h != nil {
		f = append(f,
			field{"flags", h.Flags},
			field{"B", h.B},
			field{"noverflow", h.NOverflow},
			field{"buckets", h.Buckets}, // uint64: pointers are hex
			field{"oldbuckets", h.OldBuckets},
			field{"nevacuate", int64(h.NEvacuate)},
		)
	}
	if h := r.Swiss; h != nil {
		f = append(f,
			field{"used", int64(h.Used)},
			field{"dir_ptr", h.DirPtr},
			field{"dir_len", h.DirLen},
			field{"global_depth", h.GlobalDepth},
			field{"writing", h.Writing},
			field{"small", h.Small},
		)
		if h.TombstonePossible != nil {
			f = append(f, field{"tombstone_possible", *h.TombstonePossible})
		}
	}
	return f
}

// crashingGoroutine is the goroutine of the first fatal event, if the
// report has goroutines.
func crashingGoroutine(gs []symbolizer.Goroutine, first report.Event, ok bool) *symbolizer.Goroutine {
	if !ok {
		return nil
	}
	for i := range gs {
		if gs[i].ID == first.Goid {
			return &gs[i]
		}
	}
	return nil
}
