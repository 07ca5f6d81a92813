// Package coreanalysis owns reading a saved core with delve
// (github.com/go-delve/delve, pkg/proc/core) to add what only DWARF can
// say: the crashing goroutine's frames with the names, types and,
// optionally, values of their arguments and locals. It needs a binary
// with DWARF; stripped binaries have none, and the caller says so.
package coreanalysis

import (
	"errors"
	"fmt"

	"github.com/go-delve/delve/pkg/proc"
	"github.com/go-delve/delve/pkg/proc/core"
	"github.com/go-delve/delve/service/api"

	"github.com/mapsentry/mapsentry/report"
)

// Limits: a hostile core must not make delve load without bound.
const (
	maxFrames     = 6
	maxVars       = 16
	maxValueChars = 256
)

// Options choose what is recorded.
type Options struct {
	// Values records variable values (bounded), not only names and types.
	Values bool
}

// Frames opens corePath with the executable at exePath and reads goroutine
// goid's innermost frames.
func Frames(corePath, exePath string, goid int64, opt Options) (res *report.Frames, err error) {
	res = &report.Frames{Goroutine: goid}
	defer func() {
		// delve is a large library reading hostile input; never let it
		// take the daemon down.
		if r := recover(); r != nil {
			err = fmt.Errorf("delve panicked reading the core: %v", r)
		}
	}()
	grp, err := core.OpenCore(corePath, exePath, nil)
	if err != nil {
		return res, fmt.Errorf("open core with delve: %w", err)
	}
	defer grp.Detach(false)
	t := grp.Selected
	g, err := proc.FindGoroutine(t, goid)
	if err != nil || g == nil {
		return res, fmt.Errorf("goroutine %d not in the core: %w", goid, errors.Join(err, errors.New("not found")))
	}
	frames, err := proc.GoroutineStacktrace(t, g, maxFrames, 0)
	if err != nil {
		return res, fmt.Errorf("stack of goroutine %d: %w", goid, err)
	}
	cfg := proc.LoadConfig{FollowPointers: false, MaxVariableRecurse: 1, MaxStringLen: 64, MaxArrayValues: 8, MaxStructFields: 8}
	tid := 0
	if g.Thread != nil {
		tid = g.Thread.ThreadID()
	}
	for i := range frames {
		fr := frames[i]
		if fr.Current.Fn == nil {
			continue
		}
		fv := report.FrameVars{Function: fr.Current.Fn.Name, File: fr.Current.File, Line: fr.Current.Line}
		scope := proc.FrameToScope(t, t.Memory(), g, tid, frames[i:]...)
		if args, err := scope.FunctionArguments(cfg); err == nil {
			fv.Args = vars(args, opt)
		}
		if locals, err := scope.LocalVariables(cfg); err == nil {
			fv.Locals = vars(locals, opt)
		}
		res.Frames = append(res.Frames, fv)
	}
	return res, nil
}

func vars(vs []*proc.Variable, opt Options) []report.Var {
	out := make([]report.Var, 0, min(len(vs), maxVars))
	for _, v := range vs {
		if len(out) == maxVars {
			break
		}
		rv := report.Var{Name: v.Name, Type: v.TypeString()}
		if opt.Values {
			s := api.ConvertVar(v).SinglelineString()
			if len(s) > maxValueChars {
				s = s[:maxValueChars] + "…"
			}
			rv.Value = s
		}
		out = append(out, rv)
	}
	return out
}
