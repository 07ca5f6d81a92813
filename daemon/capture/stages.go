package capture

import (
	"context"
	"errors"
	"strings"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/crashsite"
	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/inspect"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
	"github.com/mapsentry/mapsentry/threadregs"
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

// MapStage finds the map a map fatal error is about and decodes it.
type MapStage struct {
	// Keys asks for raw key/value bytes (may be secrets): off by default.
	Keys bool
}

func (MapStage) Name() string { return "map" }

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
	site, err := crashsite.FindMap(t.Mem, crashsite.Biased(t.Binary.Table, t.Bias), t.Binary.Layout, eventRegs(ev, t.Binary.Arch))
	if err != nil {
		m.Error = "map not located: " + err.Error()
		return nil
	}
	t.site, t.siteEvent = site, ev
	m.Addr, m.TypeAddr, m.FoundBy = site.MapAddr, site.TypeAddr, site.FoundBy
	m.MapFunction, m.Op, m.CallSite = site.MapFunction, site.Op, site.CallSite
	res, err := hmapdecode.Decode(ctx, t.Mem, hmapdecode.Request{
		Addr: site.MapAddr, TypeAddr: site.TypeAddr, Layout: t.Binary.Layout,
		TypesBase: typesBase(t), Keys: s.Keys,
	})
	m.Result = res
	if err != nil {
		m.Error = "decode: " + err.Error()
	}
	return nil
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

// GoroutineStage reads every goroutine while held; symbolizing waits
// until after the release (Finish).
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
		all := threadregs.ForUnwind(t.Regs)
		for tid, r := range known {
			all[tid] = r
		}
		snap, regs, err = inspect.GoroutinesFrom(ctx, t.ID.PID, t.Mem, t.Binary, all)
	} else {
		snap, regs, err = inspect.Goroutines(ctx, t.ID.PID, t.Mem, t.Binary, known)
	}
	if err != nil {
		return err
	}
	t.goroutines, t.threads = snap, regs
	if snap.Truncated {
		c.Capture.Missing = append(c.Capture.Missing, "goroutines (truncated at the freeze deadline or a bound)")
	}
	for _, e := range snap.Errors {
		c.Capture.Errors = append(c.Capture.Errors, "goroutines: "+e)
	}
	return nil
}

// Finish symbolizes the snapshot taken while frozen.
func (GoroutineStage) Finish(t *Target, c *report.Crash) error {
	if t.goroutines == nil {
		return nil
	}
	c.Goroutines = t.goroutines.Symbolize(t.Binary.Table)
	return nil
}

// PartnersStage ranks the goroutines that were on the crashing map, from
// the other fatal events and the frozen goroutines (no map-op probes).
type PartnersStage struct{}

func (PartnersStage) Name() string { return "partners" }

func (PartnersStage) Capture(ctx context.Context, t *Target, c *report.Crash) error {
	if !strings.HasPrefix(string(c.Fatal.Kind), "map_") {
		return nil
	}
	if t.goroutines == nil {
		c.PartnersNote = "no goroutine snapshot: partners unknown"
		return nil
	}
	in := crashsite.PartnerInput{
		Mem: t.Mem, Table: crashsite.Biased(t.Binary.Table, t.Bias), Layout: t.Binary.Layout, Site: t.site,
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
	c.Partners, c.PartnersNote = crashsite.Partners(in)
	return nil
}
