// Package pprofdump owns turning a crash report's goroutine dump into a
// pprof goroutine profile, the format `go tool pprof` reads (top, traces,
// flame graph), so the frozen process's goroutines open in the tools
// engineers already use for goroutine and heap profiles.
package pprofdump

import (
	"fmt"
	"io"
	"strconv"

	"github.com/google/pprof/profile"

	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// Labels of each sample (one sample per goroutine).
const (
	LabelGoroutine = "goroutine" // the goroutine id
	LabelStatus    = "status"    // running, runnable, waiting (chan receive), ...
	LabelRole      = "role"      // crasher, partner, or absent
)

// Profile builds the goroutine profile of c: one sample per goroutine,
// value 1, its frames innermost first (inlined frames as lines of one
// location, as the runtime's own profiles have them), labelled with the
// goroutine id, its status and its role in the crash.
func Profile(c *report.Crash) (*profile.Profile, error) {
	if len(c.Goroutines) == 0 {
		return nil, fmt.Errorf("crash %s has no goroutines", c.ID)
	}
	p := &profile.Profile{
		SampleType:    []*profile.ValueType{{Type: "goroutine", Unit: "count"}},
		PeriodType:    &profile.ValueType{Type: "goroutine", Unit: "count"},
		Period:        1,
		TimeNanos:     c.CapturedAt.UnixNano(),
		DurationNanos: c.Freeze.FrozenNS,
		Comments:      []string{fmt.Sprintf("mapsentry crash %s: %s", c.ID, c.Fatal.Message)},
	}
	if c.Process.Exe != "" {
		p.Mapping = []*profile.Mapping{{ID: 1, File: c.Process.Exe, BuildID: c.Process.BuildID, HasFunctions: true, HasFilenames: true, HasLineNumbers: true}}
	}
	roles := map[int64]string{}
	for _, p := range c.Partners {
		roles[p.Goid] = "partner"
	}
	if len(c.Fatal.Events) > 0 {
		roles[c.Fatal.Events[0].Goid] = "crasher"
	}
	funcs := map[[2]string]*profile.Function{}
	fn := func(name, file string) *profile.Function {
		k := [2]string{name, file}
		if f, ok := funcs[k]; ok {
			return f
		}
		f := &profile.Function{ID: uint64(len(p.Function) + 1), Name: name, SystemName: name, Filename: file}
		funcs[k] = f
		p.Function = append(p.Function, f)
		return f
	}
	locs := map[string]*profile.Location{}
	for _, g := range c.Goroutines {
		s := &profile.Sample{Value: []int64{1}, Label: map[string][]string{
			LabelGoroutine: {strconv.FormatInt(g.ID, 10)},
			LabelStatus:    {status(g)},
		}}
		if r := roles[g.ID]; r != "" {
			s.Label[LabelRole] = []string{r}
		}
		for _, group := range physical(g.Frames) {
			key := locKey(group)
			l, ok := locs[key]
			if !ok {
				l = &profile.Location{ID: uint64(len(p.Location) + 1), Address: group[0].PC}
				if len(p.Mapping) > 0 {
					l.Mapping = p.Mapping[0]
				}
				for _, f := range group {
					l.Line = append(l.Line, profile.Line{Function: fn(f.Function, f.File), Line: int64(f.Line)})
				}
				locs[key] = l
				p.Location = append(p.Location, l)
			}
			s.Location = append(s.Location, l)
		}
		p.Sample = append(p.Sample, s)
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("goroutine profile of crash %s: %w", c.ID, err)
	}
	return p, nil
}

// Write writes c's goroutine profile, gzipped protobuf.
func Write(w io.Writer, c *report.Crash) error {
	p, err := Profile(c)
	if err != nil {
		return err
	}
	return p.Write(w)
}

func status(g symbolizer.Goroutine) string {
	if g.WaitReason != "" {
		return g.Status + " (" + g.WaitReason + ")"
	}
	return g.Status
}

// physical groups frames by physical frame: an inlined frame shares its
// PC with the frames that follow it up to the one that is not inlined.
func physical(frames []symbolizer.Frame) [][]symbolizer.Frame {
	var out [][]symbolizer.Frame
	var cur []symbolizer.Frame
	for _, f := range frames {
		cur = append(cur, f)
		if !f.Inlined {
			out = append(out, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func locKey(group []symbolizer.Frame) string {
	k := strconv.FormatUint(group[0].PC, 16)
	for _, f := range group {
		k += "|" + f.Function + ":" + strconv.Itoa(f.Line)
	}
	return k
}
