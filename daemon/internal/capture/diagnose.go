package capture

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/internal/crashsite"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/report"
)

// DiagnoseStage names the crashing map, finds who holds it, and writes the
// report's diagnosis and signature. While the process is held it only
// copies (every goroutine's stack, the data sections, the heap objects a
// few pointers from them: crashsite.CopyForDiagnosis); the analysis runs
// after the release, from that copy, through the same ReadAt interface.
// It must run after the partner and flight-recorder stages.
type DiagnoseStage struct {
	mu    sync.Mutex
	debug []debugEntry // small LRU, newest last
}

type debugEntry struct {
	key     probes.FileKey
	buildID string // an inode reused by another binary is another binary
	d       *crashsite.DebugInfo
	err     error
}

// The diagnosis copies into the process's copy in batches; a drift of
// either side's methods must not silently fall back to one read per range.
var _ crashsite.Batch = (*procmem.Copy)(nil)

// maxDebugInfos bounds the binaries whose symbols are kept open.
const maxDebugInfos = 8

// diagnoseBudget bounds the analysis after the release.
const diagnoseBudget = 5 * time.Second

// diagnosisCopy is what Capture leaves for Finish.
type diagnosisCopy struct {
	mem    crashsite.Memory // nil: the process's copy (t.Mem.Copy().Image())
	stacks []crashsite.Stack
	debug  *crashsite.DebugInfo
	notes  []string
	// heap is the layout the allocation-site chain was copied with (nil:
	// not copied, heapNote says why).
	heap     *goruntime.HeapOffsets
	heapNote string
}

// NewDiagnoseStage makes the stage; Close releases the binaries it keeps.
func NewDiagnoseStage() *DiagnoseStage { return &DiagnoseStage{} }

func (*DiagnoseStage) Name() string { return "diagnose" }

// Close releases every binary held open.
func (s *DiagnoseStage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, e := range s.debug {
		errs = append(errs, e.d.Close())
	}
	s.debug = nil
	return errors.Join(errs...)
}

// debugInfo returns the binary's symbols, opened once per binary.
func (s *DiagnoseStage) debugInfo(b *probes.Binary) (*crashsite.DebugInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range s.debug {
		if e.key == b.Key && e.buildID == b.BuildID {
			s.debug = append(append(s.debug[:i:i], s.debug[i+1:]...), e)
			return e.d, e.err
		}
	}
	d, err := crashsite.OpenDebugInfo(b.Path)
	if d == nil {
		return nil, err
	}
	if len(s.debug) >= maxDebugInfos {
		s.debug[0].d.Close()
		s.debug = s.debug[1:]
	}
	s.debug = append(s.debug, debugEntry{key: b.Key, buildID: b.BuildID, d: d, err: err})
	return d, err
}

// Capture copies what the diagnosis will read.
func (s *DiagnoseStage) Capture(ctx context.Context, t *Target, c *report.Crash) error {
	if !report.IsMapKind(c.Fatal.Kind) || t.Binary == nil || t.Binary.Table == nil || t.Binary.Layout == nil || t.goroutines == nil {
		return nil
	}
	if c.Map == nil || c.Map.Addr == 0 {
		return nil
	}
	dc := &diagnosisCopy{}
	t.diagnosis = dc
	tab := crashsite.Biased(t.Binary.Table, t.Bias)
	// Through the process's copy (procmem.Copy): the goroutine stage has
	// copied every g and stack already, so these reads cost no system
	// call; what is new is copied once and kept there too.
	cp := t.Mem.Copy()
	dc.stacks = crashsite.Stacks(cp, tab, t.Binary.Layout, t.goroutines.Goroutines, t.threads)
	plan := crashsite.CopyPlan{Stacks: dc.stacks, MapAddr: c.Map.Addr}
	d, err := s.debugInfo(t.Binary)
	if err != nil {
		dc.notes = append(dc.notes, "symbols: "+err.Error())
	}
	if d != nil {
		dc.debug = d
		for _, r := range d.Sections {
			plan.Globals = append(plan.Globals, crashsite.Range{Addr: r.Addr + t.Bias, Size: r.Size})
		}
		plan.Roots = []crashsite.Range{}
		for _, r := range d.UserGlobals() {
			plan.Roots = append(plan.Roots, crashsite.Range{Addr: r.Addr + t.Bias, Size: r.Size})
		}
	}
	// The map's allocation site, from the memory profiler's record: only
	// with DWARF (the probes' refined layout has the heap offsets then).
	if h, err := t.Binary.Layout.HeapLayout(); err == nil && d != nil && !d.Stripped {
		plan.Heap, plan.Bias = h, t.Bias
		dc.heap = h
	} else if err != nil {
		dc.heapNote = err.Error()
	}
	// Into the process's copy, in a few batches: the analysis reads its
	// image after the release.
	own, notes := crashsite.CopyForDiagnosis(ctx, cp, plan)
	if own != nil {
		dc.mem = own
	}
	dc.notes = append(dc.notes, notes...)
	return nil
}

// Finish analyses the copy after the release and writes the diagnosis.
func (s *DiagnoseStage) Finish(t *Target, c *report.Crash) error {
	d := &report.Diagnosis{}
	c.Diagnosis = d
	dc := t.diagnosis
	if dc != nil && c.Map != nil {
		ctx, cancel := context.WithTimeout(context.Background(), diagnoseBudget)
		defer cancel()
		mem := dc.mem
		if mem == nil {
			mem = t.Mem.Copy().Image()
		}
		in := crashsite.DiagnoseInput{
			Mem: mem, Table: crashsite.Biased(t.Binary.Table, t.Bias), Code: crashsite.StaticCode(t.Binary.Table, t.Bias),
			Debug: dc.debug, Bias: t.Bias, Heap: dc.heap, HeapNote: dc.heapNote,
			MapAddr: c.Map.Addr, TypeAddr: c.Map.TypeAddr, Stacks: dc.stacks, Partners: c.Partners, CrashOp: c.Map.Op,
		}
		if t.siteEvent != nil {
			in.Crasher = t.siteEvent.Goid
		}
		res := crashsite.DiagnoseMap(ctx, in)
		d.Variable, d.Holders, d.SyncMap = res.Variable, res.Holders, res.SyncMap
		d.Notes = append(append(d.Notes, dc.notes...), res.Notes...)
		renameInferred(c.Partners, d.Holders)
		if len(res.Candidates) > 0 {
			before := len(c.Partners)
			c.Partners = mergePartners(c.Partners, res.Candidates)
			if before == 0 {
				c.PartnersNote = ""
			}
		}
		if len(d.Holders) == 0 {
			d.HoldersNote = "no goroutine stack or package-level variable held the map's address"
		}
	} else if report.IsMapKind(c.Fatal.Kind) && t.Binary != nil && t.Binary.Stripped {
		d.Variable = &report.Variable{Name: report.UnknownStripped, Source: report.SourceStripped}
	}
	report.Diagnose(c, d)
	return nil
}

// renameInferred names a partner found by stack inference (running user
// code, or its stack holding the map's address) after the frame whose
// live variable holds the map (DWARF), when the holder search found one:
// that frame's function is the code path on the map, the innermost user
// frame may be a helper it called (main.deepYield under main.writer).
func renameInferred(ps []report.Partner, hs []report.Holder) {
	by := map[int64]report.Holder{}
	for _, h := range hs {
		if h.Goid > 0 && h.Variable != "" && h.Function != "" {
			by[h.Goid] = h
		}
	}
	for i := range ps {
		p := &ps[i]
		if p.Evidence != report.EvidenceRunning && p.Evidence != report.EvidenceStackHoldsMap {
			continue
		}
		if h, ok := by[p.Goid]; ok && h.Function != p.Function {
			p.Function, p.File, p.Line = h.Function, h.File, h.Line
		}
	}
}
