package capture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/internal/crashsite"
	"github.com/mapsentry/mapsentry/internal/inspect"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// DefaultStages are the capture stages in the order they run while the
// process is frozen: the map first (small, and the point of a map crash),
// then every goroutine, the partners, and the optional core last (the
// biggest read), which delve reads after the release. values records map
// keys/values and variable values, which can be secrets.
func DefaultStages(values bool, core *CoreStage) []Stage {
	st := []Stage{MapStage{Keys: values}, GoroutineStage{}, PartnersStage{}}
	if core != nil {
		st = append(st, *core, DelveStage{Values: values})
	}
	return st
}

// eventRegs returns the probed thread's registers from a BPF event.
func eventRegs(ev *bpf.Event, arch string) crashsite.Regs {
	if arch == "arm64" { // user_pt_regs: x0..x30, sp, pc
		return crashsite.Regs{PC: ev.Regs[32], SP: ev.Regs[31], BP: ev.Regs[29], RetAddr: ev.RetAddr, GPR: ev.Regs[:29]}
	}
	// struct pt_regs (x86-64): r15..r12, bp, bx, r11..r8, ax, cx, dx, si,
	// di, orig_ax, ip, cs, flags, sp, ss.
	return crashsite.Regs{PC: ev.Regs[16], SP: ev.Regs[19], BP: ev.Regs[4], RetAddr: ev.RetAddr, GPR: ev.Regs[:15]}
}

// MapStage finds the map a map fatal error is about, copies it while the
// process is held, and decodes the copy after the release.
type MapStage struct {
	// Keys asks for raw key/value bytes (may be secrets): off by default.
	Keys bool
}

func (MapStage) Name() string { return "map" }

// Capture locates the map from the probed thread's frames — a few small
// reads, copied through so that the analysis can repeat them — and
// copies the map's header, type, and buckets or tables and groups in
// bulk (hmapdecode.Copy).
func (s MapStage) Capture(ctx context.Context, t *Target, c *report.Crash) error {
	if !strings.HasPrefix(string(c.Fatal.Kind), "map_") {
		return nil
	}
	if t.Binary == nil || t.Binary.Table == nil || t.Binary.Layout == nil {
		return errors.New("binary not inspected")
	}
	ev := mapEvent(t.Events, c)
	m := &report.Map{}
	c.Map = m
	cp := t.Mem.Copy()
	site, err := crashsite.FindMap(cp, crashsite.Biased(t.Binary.Table, t.Bias), t.Binary.Layout, eventRegs(ev, t.Binary.Arch))
	if err != nil {
		m.Error = "map not located: " + err.Error()
		return nil
	}
	t.site, t.siteEvent = site, ev
	m.Addr, m.TypeAddr, m.FoundBy = site.MapAddr, site.TypeAddr, site.FoundBy
	m.MapFunction, m.Op, m.CallSite = site.MapFunction, site.Op, site.CallSite
	// A failed copy is seen again by the decode of the copy, which says
	// what is missing; only a vanished process is news here.
	if _, err := hmapdecode.Copy(ctx, cp, s.request(t)); errors.Is(err, procmem.ErrGone) {
		return err
	}
	return nil
}

// Finish decodes the map from the copy.
func (s MapStage) Finish(t *Target, c *report.Crash) error {
	if t.Mem == nil {
		return nil // nothing was captured
	}
	reportCuts(t, c)
	if c.Map == nil || t.site == nil {
		return nil
	}
	res, err := hmapdecode.Decode(context.Background(), t.Mem.Copy().Image(), s.request(t))
	c.Map.Result = res
	if err != nil {
		c.Map.Error = "decode: " + err.Error()
	}
	return nil
}

func (s MapStage) request(t *Target) hmapdecode.Request {
	return hmapdecode.Request{
		Addr: t.site.MapAddr, TypeAddr: t.site.TypeAddr, Layout: t.Binary.Layout,
		TypesBase: typesBase(t), Keys: s.Keys,
	}
}

// reportCuts says, once, what the copy left out (capture.max_bytes, or
// memory unreadable when copied).
func reportCuts(t *Target, c *report.Crash) {
	st := t.Mem.Copy().Stats()
	if st.CutRanges == 0 {
		return
	}
	msg := fmt.Sprintf("copy: %d ranges (%d bytes) left out", st.CutRanges, st.CutBytes)
	if len(st.Cuts) > 0 {
		msg += fmt.Sprintf(", the first %d bytes at %#x: %s", st.Cuts[0].Len, st.Cuts[0].Addr, st.Cuts[0].Reason)
	}
	if !slices.Contains(c.Capture.Missing, msg) {
		c.Capture.Missing = append(c.Capture.Missing, msg)
	}
}

// typesBase is moduledata.types at run time (0 when unknown).
func typesBase(t *Target) uint64 {
	if t.Binary.TypesBase == 0 {
		return 0
	}
	return t.Binary.TypesBase + t.Bias
}

// mapEvent picks the event the map is found from: the first (in time)
// whose message is a map error, else the first. Messages come from the
// report, where copies the probe could not make were read from memory.
func mapEvent(events []bpf.Event, c *report.Crash) *bpf.Event {
	for i := range events {
		if i < len(c.Fatal.Events) && strings.Contains(c.Fatal.Events[i].Message, "concurrent map") {
			return &events[i]
		}
	}
	return &events[0]
}

// GoroutineStage copies every goroutine's bytes while held; unwinding
// and symbolizing wait until after the release (Finish).
type GoroutineStage struct{}

func (GoroutineStage) Name() string { return "goroutines" }

func (GoroutineStage) Capture(ctx context.Context, t *Target, c *report.Crash) error {
	if t.Binary == nil {
		return errors.New("binary not inspected")
	}
	// The probed threads' registers are exactly what the probe saw; every
	// other thread's come from the hold (which read them as the tracer),
	// or, for a process not held, from inspect (a brief ptrace seize).
	known := make(map[int]symbolizer.Registers, len(t.Events))
	for i := range t.Events {
		r := eventRegs(&t.Events[i], t.Binary.Arch)
		known[int(t.Events[i].Tid)] = symbolizer.Registers{PC: r.PC, SP: r.SP, BP: r.BP}
	}
	var (
		snap *symbolizer.Snapshot
		regs map[int]symbolizer.Registers
		err  error
	)
	if t.Regs != nil {
		// Held through ptrace: only the tracer can ask the threads, and
		// it did; a seize from here would fail (or steal a thread).
		all := threadregs.ForUnwind(t.Regs)
		for tid, r := range known {
			all[tid] = r
		}
		snap, regs, err = inspect.CopyGoroutinesFrom(ctx, t.ID.PID, t.Mem.Copy(), t.Binary, t.Bias, all)
	} else {
		snap, regs, err = inspect.CopyGoroutines(ctx, t.ID.PID, t.Mem.Copy(), t.Binary, t.Bias, known)
	}
	if err != nil {
		return err
	}
	t.goroutines, t.threads = snap, regs
	return nil
}

// Finish unwinds the goroutines from the copy and symbolizes them.
func (GoroutineStage) Finish(t *Target, c *report.Crash) error {
	if t.Mem == nil || t.goroutines == nil {
		return nil
	}
	reportCuts(t, c)
	if err := t.goroutines.Analyse(t.Mem.Copy().Image(), t.Binary.Table); err != nil {
		t.goroutines = nil
		return err
	}
	if t.goroutines.Truncated {
		c.Capture.Missing = append(c.Capture.Missing, "goroutines (truncated at the freeze deadline or a bound)")
	}
	for _, e := range t.goroutines.Errors {
		c.Capture.Errors = append(c.Capture.Errors, "goroutines: "+e)
	}
	c.Goroutines = t.goroutines.Symbolize(t.Binary.Table)
	return nil
}

// PartnersStage ranks the goroutines that were on the crashing map, from
// the other fatal events and the frozen goroutines (no map-op probes).
type PartnersStage struct{}

func (PartnersStage) Name() string { return "partners" }

// Capture locates the map from every other fatal event's registers while
// the process is held, only so that the few bytes that takes (frame
// words, the objects a closure points to) are in the copy: Finish locates
// them again from the copy.
func (PartnersStage) Capture(ctx context.Context, t *Target, c *report.Crash) error {
	if !strings.HasPrefix(string(c.Fatal.Kind), "map_") || t.site == nil || t.Binary == nil {
		return nil
	}
	tab := crashsite.Biased(t.Binary.Table, t.Bias)
	for i := range t.Events {
		if ev := &t.Events[i]; ev != t.siteEvent && ctx.Err() == nil {
			_, _ = crashsite.FindMap(t.Mem.Copy(), tab, t.Binary.Layout, eventRegs(ev, t.Binary.Arch))
		}
	}
	return nil
}

// Finish runs the partner analysis on the copy.
func (PartnersStage) Finish(t *Target, c *report.Crash) error {
	if !strings.HasPrefix(string(c.Fatal.Kind), "map_") || t.Mem == nil {
		return nil
	}
	reportCuts(t, c)
	if t.goroutines == nil || t.goroutines.Pending() {
		c.PartnersNote = "no goroutine snapshot: partners unknown"
		return nil
	}
	in := crashsite.PartnerInput{
		Mem:   copiedOrCode{img: t.Mem.Copy().Image(), tab: t.Binary.Table, bias: t.Bias},
		Table: crashsite.Biased(t.Binary.Table, t.Bias), Layout: t.Binary.Layout, Site: t.site,
		Goroutines: t.goroutines.Goroutines, Threads: t.threads,
	}
	if t.siteEvent != nil {
		in.CrasherGoid = t.siteEvent.Goid
	}
	for i := range t.Events {
		ev := &t.Events[i]
		if ev == t.siteEvent {
			continue
		}
		in.Others = append(in.Others, crashsite.Fatal{TID: int(ev.Tid), Goid: ev.Goid, Regs: eventRegs(ev, t.Binary.Arch)})
	}
	probeless, note := crashsite.Partners(in)
	// The flight recorder's partners (FlightRecorderStage, which ran while
	// the process was held) merge in by goroutine, as when this analysis
	// ran first.
	recorded := c.Partners
	c.Partners = mergePartners(probeless, recorded)
	if len(probeless) == 0 && len(c.Partners) > 0 {
		note = ""
	}
	c.PartnersNote = note
	return nil
}

// copiedOrCode is the copy of a process, and its Go code from the binary:
// the partner search decodes call sites (a go statement's wrapper), and
// code, unlike data, is the same in the file as in the process. Anything
// else not in the copy stays an error.
type copiedOrCode struct {
	img  *procmem.Image
	tab  *symbolizer.Table
	bias uint64
}

func (m copiedOrCode) ReadAt(p []byte, addr uint64) (int, error) {
	n, err := m.img.ReadAt(p, addr)
	if err == nil || addr < m.bias {
		return n, err
	}
	md := m.tab.Moduledata()
	link := addr - m.bias
	if md == nil || link < md.Text || link+uint64(len(p)) > md.EText || link+uint64(len(p)) < link {
		return n, err
	}
	if _, serr := m.tab.ReadStatic(p, link); serr != nil {
		return n, err
	}
	return len(p), nil
}
