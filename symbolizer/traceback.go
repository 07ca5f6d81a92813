package symbolizer

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/mapsentry/mapsentry/goruntime"
)

// Goroutine is one goroutine of a dump, symbolized. It is the report's
// `goroutines` entry.
type Goroutine struct {
	ID          int64   `json:"id"`
	Status      string  `json:"status"` // runtime status name: running, runnable, waiting, syscall, ...
	WaitReason  string  `json:"wait_reason,omitempty"`
	WaitMinutes int64   `json:"wait_minutes,omitempty"`
	WaitSince   int64   `json:"wait_since,omitempty"` // target's nanotime when it blocked
	Thread      int     `json:"thread,omitempty"`     // OS thread id when on a thread
	M           *int64  `json:"m,omitempty"`
	P           *int64  `json:"p,omitempty"`
	Locked      bool    `json:"locked_thread,omitempty"`
	Frames      []Frame `json:"frames"`
	CreatedBy   *Frame  `json:"created_by,omitempty"`
	ParentID    int64   `json:"parent_id,omitempty"`
	System      bool    `json:"system,omitempty"` // hidden by the runtime unless GOTRACEBACK=system
	StackError  string  `json:"stack_error,omitempty"`
	Truncated   bool    `json:"truncated,omitempty"`
	Addr        uint64  `json:"g,omitempty"`
}

// Symbolize turns a snapshot into goroutines. It reads only the binary.
func (s *Snapshot) Symbolize(t *Table) []Goroutine {
	out := make([]Goroutine, 0, len(s.Goroutines))
	for i := range s.Goroutines {
		out = append(out, s.symbolize(t, &s.Goroutines[i]))
	}
	return out
}

func (s *Snapshot) symbolize(t *Table, rg *RawGoroutine) Goroutine {
	st := rg.Status &^ goruntime.GScan
	g := Goroutine{ID: rg.ID, Status: goruntime.GStatusName(s.GoMinor, rg.Status), Thread: rg.TID,
		Locked: rg.LockedM, ParentID: rg.ParentID, StackError: rg.StackError, Truncated: rg.Truncated, Addr: rg.Addr}
	if g.Status == "" {
		g.Status = fmt.Sprintf("status %d", st)
	}
	if st == goruntime.GWaiting {
		g.WaitReason = goruntime.WaitReasonString(s.GoMinor, rg.WaitReason)
	}
	if (st == goruntime.GWaiting || st == goruntime.GSyscall) && rg.WaitSince != 0 {
		g.WaitSince = rg.WaitSince
		if s.Nanotime > rg.WaitSince {
			g.WaitMinutes = (s.Nanotime - rg.WaitSince) / 60e9
		}
	}
	if rg.MID >= 0 {
		m := rg.MID
		g.M = &m
	}
	if rg.PID >= 0 {
		p := rg.PID
		g.P = &p
	}
	if st != goruntime.GRunning && st != goruntime.GSyscall {
		g.Thread = 0
	}
	g.Frames = make([]Frame, 0, len(rg.PCs)+4)
	for i, pc := range rg.PCs {
		look := pc
		if !(i == 0 && rg.Trap) && pc > 0 {
			look = pc - 1 // a return address: the call is the instruction before
		}
		frs := t.PCToFrames(look - s.LoadBias)
		if len(frs) == 0 {
			g.Frames = append(g.Frames, Frame{Function: "?", File: "?", PC: pc})
			continue
		}
		for _, fr := range frs {
			fr.PC, fr.Entry = pc, fr.Entry+s.LoadBias
			g.Frames = append(g.Frames, fr)
		}
	}
	if f, ok := t.FuncForPC(rg.StartPC - s.LoadBias); ok {
		g.System = IsSystem(f.Name)
	}
	if gopc := rg.GoPC - s.LoadBias; rg.GoPC != 0 {
		if f, ok := t.FuncForPC(gopc); ok {
			look := gopc
			if look > f.Entry {
				look--
			}
			file, line, _ := t.fileLine(&f, look)
			g.CreatedBy = &Frame{Function: f.Name, File: file, Line: line, PC: rg.GoPC, Entry: f.Entry + s.LoadBias}
		}
	}
	return g
}

// statusText is the bracketed part of a traceback header.
func (g *Goroutine) statusText() string {
	var b strings.Builder
	if g.WaitReason != "" {
		b.WriteString(g.WaitReason)
	} else {
		b.WriteString(g.Status)
	}
	if g.WaitMinutes >= 1 {
		fmt.Fprintf(&b, ", %d minutes", g.WaitMinutes)
	}
	if g.Locked {
		b.WriteString(", locked to thread")
	}
	return b.String()
}

// WriteTraceback writes goroutines in the runtime's traceback format
// (what GOTRACEBACK=system prints, without argument values), which tools
// such as panicparse parse.
func WriteTraceback(w io.Writer, gs []Goroutine) error {
	bw := bufio.NewWriter(w)
	for i := range gs {
		g := &gs[i]
		if i > 0 {
			bw.WriteString("\n")
		}
		fmt.Fprintf(bw, "goroutine %d [%s]:\n", g.ID, g.statusText())
		if len(g.Frames) == 0 {
			if g.StackError != "" {
				fmt.Fprintf(bw, "\tstack unavailable: %s\n", g.StackError)
			}
		}
		writeFrames(bw, g.Frames)
		if g.Truncated {
			bw.WriteString("...additional frames elided...\n")
		}
		if c := g.CreatedBy; c != nil {
			fmt.Fprintf(bw, "created by %s", c.Function)
			if g.ParentID != 0 {
				fmt.Fprintf(bw, " in goroutine %d", g.ParentID)
			}
			fmt.Fprintf(bw, "\n\t%s:%d +%#x\n", c.File, c.Line, c.PC-c.Entry)
		}
	}
	return bw.Flush()
}

func writeFrames(bw *bufio.Writer, frames []Frame) {
	for _, f := range frames {
		fmt.Fprintf(bw, "%s(...)\n\t%s:%d", f.Function, f.File, f.Line)
		if !f.Inlined && f.Entry != 0 && f.PC >= f.Entry {
			fmt.Fprintf(bw, " +%#x", f.PC-f.Entry)
		}
		bw.WriteString("\n")
	}
}

// Group is a set of goroutines with the same state and stack.
type Group struct {
	Count      int     `json:"count"`
	State      string  `json:"state"`
	IDs        []int64 `json:"ids"` // at most 20
	Frames     []Frame `json:"frames"`
	CreatedBy  *Frame  `json:"created_by,omitempty"`
	MinMinutes int64   `json:"min_minutes,omitempty"`
	MaxMinutes int64   `json:"max_minutes,omitempty"`
}

// Summarize groups goroutines with identical state and stack (function,
// file and line of every frame, and the creating function), largest group
// first.
func Summarize(gs []Goroutine) []Group {
	idx := make(map[string]int)
	var out []Group
	for i := range gs {
		g := &gs[i]
		state := g.WaitReason
		if state == "" {
			state = g.Status
		}
		var k strings.Builder
		k.WriteString(state)
		for _, f := range g.Frames {
			fmt.Fprintf(&k, "|%s:%s:%d", f.Function, f.File, f.Line)
		}
		if g.CreatedBy != nil {
			fmt.Fprintf(&k, "|created:%s:%d", g.CreatedBy.Function, g.CreatedBy.Line)
		}
		j, ok := idx[k.String()]
		if !ok {
			j = len(out)
			idx[k.String()] = j
			out = append(out, Group{State: state, Frames: g.Frames, CreatedBy: g.CreatedBy,
				MinMinutes: g.WaitMinutes, MaxMinutes: g.WaitMinutes})
		}
		grp := &out[j]
		grp.Count++
		if len(grp.IDs) < 20 {
			grp.IDs = append(grp.IDs, g.ID)
		}
		grp.MinMinutes = min(grp.MinMinutes, g.WaitMinutes)
		grp.MaxMinutes = max(grp.MaxMinutes, g.WaitMinutes)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Count > out[b].Count })
	return out
}

// WriteSummary writes the groups as text: a header with the count and the
// state, the shared stack, and up to 20 goroutine ids.
func WriteSummary(w io.Writer, groups []Group) error {
	bw := bufio.NewWriter(w)
	for i, g := range groups {
		if i > 0 {
			bw.WriteString("\n")
		}
		mins := ""
		if g.MaxMinutes > 0 {
			mins = fmt.Sprintf(", %d-%d minutes", g.MinMinutes, g.MaxMinutes)
		}
		fmt.Fprintf(bw, "%d goroutine(s) [%s%s]: %s\n", g.Count, g.State, mins, idList(g.IDs, g.Count))
		writeFrames(bw, g.Frames)
		if c := g.CreatedBy; c != nil {
			fmt.Fprintf(bw, "created by %s\n\t%s:%d\n", c.Function, c.File, c.Line)
		}
	}
	return bw.Flush()
}

func idList(ids []int64, total int) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	s := strings.Join(parts, " ")
	if total > len(ids) {
		s += fmt.Sprintf(" ... (%d more)", total-len(ids))
	}
	return s
}
