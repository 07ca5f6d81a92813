package report

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strings"
)

// Diagnosis is the conclusion an engineer acts on: which map variable,
// which two code paths, what to change, and how sure the capture is.
// It is derived from the rest of the report (Diagnose) plus what the
// capture's naming and holder search found.
type Diagnosis struct {
	// Sentence is one sentence naming the kind, the variable and both code
	// paths with file:line, and the fix.
	Sentence string `json:"sentence"`
	// Strength is the evidence behind the second code path: certain (a
	// map-op probe, another fatal error on the map, or a goroutine frozen
	// inside a map function on it) or inferred (from stacks).
	Strength string `json:"evidence_strength"`
	// Evidence is the partner's evidence kind (Evidence* constants), empty
	// when no other code path was found.
	Evidence string `json:"evidence,omitempty"`
	// Variable names the map, when a source names it.
	Variable *Variable `json:"variable,omitempty"`
	// Paths are the two code paths: the crashing goroutine's first.
	Paths []CodePath `json:"code_paths,omitempty"`
	// Holders are the goroutines and globals that hold the map's pointer,
	// writers first.
	Holders []Holder `json:"holders,omitempty"`
	// HoldersNote says why Holders is empty or may be incomplete.
	HoldersNote string `json:"holders_note,omitempty"`
	// SyncMap names the package-level sync.Map that stores the map as a
	// value, when it does (sync.Map guards its entries, not the maps in them).
	SyncMap string `json:"sync_map,omitempty"`
	// Signature is the crash's stable fingerprint (Signature).
	Signature string `json:"signature"`
	// Notes say what was bounded, unreadable or malformed.
	Notes []string `json:"notes,omitempty"`
}

// Strength values.
const (
	StrengthCertain  = "certain"
	StrengthInferred = "inferred"
	StrengthNone     = "none"
)

// Variable is a name for the crashing map.
type Variable struct {
	// Name is the variable as a user writes it: main.ledger (package
	// level), accounts (a local or argument), main.srv.sessions or
	// s.sessions (a field). "unknown (stripped)" when the binary has no
	// symbols; empty when no source named it.
	Name string `json:"name"`
	// Source says which source named it (Source* constants).
	Source string `json:"source"`
	// Function is the function whose frame holds a local or argument.
	Function string `json:"function,omitempty"`
	// GoType is the map's Go type, when known.
	GoType string `json:"go_type,omitempty"`
	// AllocSite is where the map was made: the first frame outside the
	// runtime of the stack the Go memory profiler recorded for the map
	// header's allocation (source type_only, with DWARF, when the
	// allocation was sampled: GODEBUG=memprofilerate=1 samples all).
	AllocSite *Site `json:"alloc_site,omitempty"`
	// AllocStack is that stack, innermost first (at most 64 frames).
	AllocStack []Site `json:"alloc_stack,omitempty"`
	// AllocNote says why AllocSite is unknown (type_only).
	AllocNote string `json:"alloc_note,omitempty"`
}

// Site is a source location: function and file:line.
type Site struct {
	Function string `json:"function"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
}

// Variable sources, in the order they are tried.
const (
	SourceSymbolTable = "symbol_table" // a package-level variable (ELF .symtab)
	SourceDWARFLocal  = "dwarf_local"  // a local or argument (DWARF location)
	SourceDWARFField  = "dwarf_field"  // a struct field (DWARF types)
	SourceTypeOnly    = "type_only"    // no variable found: the map's type only
	SourceStripped    = "stripped"     // no symbols: never a guess
	UnknownStripped   = "unknown (stripped)"
)

// CodePath is one code path that touched the map.
type CodePath struct {
	Goid     int64  `json:"goid"`
	Op       string `json:"op,omitempty"`
	Function string `json:"function"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
}

// Holder is a goroutine frame or a global that holds the map's pointer.
type Holder struct {
	// Kind: goroutine (a frame's stack slot), goroutine_pointer (an object
	// a frame points to: closure context, struct), global.
	Kind string `json:"kind"`
	Goid int64  `json:"goid,omitempty"`
	// Function, File, Line: the frame that holds it (for a goroutine).
	Function string `json:"function,omitempty"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	// Variable is the holding variable, when DWARF or the symbol table
	// names it (a global's name; a local's name).
	Variable string `json:"variable,omitempty"`
	// Addr is where the pointer was found.
	Addr uint64 `json:"addr"`
	// Writer: the goroutine is a writer of the map in this crash (crasher
	// or partner with a write op).
	Writer bool `json:"writer,omitempty"`
	// Partner: the goroutine is the crasher or a partner.
	Role string `json:"role,omitempty"` // crasher, partner, holder
}

// Holder kinds.
const (
	HolderFrame   = "goroutine"
	HolderPointer = "goroutine_pointer"
	HolderGlobal  = "global"
)

// IsMapKind reports the fatal kinds a diagnosis covers.
func IsMapKind(k Kind) bool { return strings.HasPrefix(string(k), "map_") }

// Strength of a partner evidence kind: certain for evidence that saw the
// goroutine on the map, inferred for stack-based evidence.
func StrengthOf(evidence string) string {
	switch evidence {
	case EvidenceFatalSameMap, EvidenceFlightRecorder, EvidenceMapFunction:
		return StrengthCertain
	case "":
		return StrengthNone
	}
	return StrengthInferred
}

func isWriteOp(op string) bool { return op == "assign" || op == "delete" || op == "clear" }

// crashPath is the crashing goroutine's code path: the map call site.
func crashPath(c *Crash) (CodePath, bool) {
	var goid int64 = -1
	if len(c.Fatal.Events) > 0 {
		goid = c.Fatal.Events[0].Goid
	}
	if c.Map == nil || c.Map.CallSite == nil || c.Map.CallSite.Function == "" {
		return CodePath{Goid: goid}, false
	}
	cs := c.Map.CallSite
	return CodePath{Goid: goid, Op: c.Map.Op, Function: cs.Function, File: cs.File, Line: cs.Line}, true
}

// otherPath picks the second code path: the strongest partner, preferring
// (at equal strength) a writer for a read/iteration/clone crash and
// any writer for write/write.
func otherPath(c *Crash) (CodePath, string, bool) {
	best := -1
	for i, p := range c.Partners {
		if p.Function == "" {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := c.Partners[best]
		if p.Rank < b.Rank || (p.Rank == b.Rank && isWriteOp(p.Op) && !isWriteOp(b.Op)) {
			best = i
		}
	}
	if best < 0 {
		return CodePath{}, "", false
	}
	p := c.Partners[best]
	return CodePath{Goid: p.Goid, Op: p.Op, Function: p.Function, File: p.File, Line: p.Line}, p.Evidence, true
}

// at renders file:line (function), the file by its base name.
func (p CodePath) at() string {
	if p.Function == "" {
		return "an unknown code path"
	}
	if p.File == "" {
		return p.Function
	}
	return fmt.Sprintf("%s:%d (%s)", path.Base(p.File), p.Line, p.Function)
}

func goroutineID(id int64) string {
	if id <= 0 {
		return "?"
	}
	return fmt.Sprint(id)
}

// mapName is how the sentence names the map.
func mapName(v *Variable, goType string) string {
	switch {
	case v != nil && v.Name != "" && v.Name != UnknownStripped && v.Function != "":
		return fmt.Sprintf("%s (in %s)", v.Name, v.Function)
	case v != nil && v.Name != "" && v.Name != UnknownStripped:
		return v.Name
	case goType != "" && v != nil && v.Name == UnknownStripped:
		return fmt.Sprintf("of type %s (variable unknown: stripped binary)", goType)
	case v != nil && v.Name == UnknownStripped:
		return "(variable unknown: stripped binary)"
	case goType != "" && v != nil && v.AllocSite != nil:
		return fmt.Sprintf("of type %s allocated at %s", goType, v.AllocSite.At())
	case goType != "":
		return "of type " + goType
	case v != nil && v.AllocSite != nil:
		return "allocated at " + v.AllocSite.At()
	}
	return "(variable not found)"
}

// At renders file:line (function), the file by its base name.
func (s Site) At() string {
	return CodePath{Function: s.Function, File: s.File, Line: s.Line}.at()
}

// Diagnose fills d.Sentence, d.Paths, d.Strength and d.Signature from c
// (its map, partners and kind) and what d already holds (Variable,
// Holders, SyncMap). It is pure: the same report gives the same diagnosis.
func Diagnose(c *Crash, d *Diagnosis) {
	if d == nil || c == nil {
		return
	}
	goType := ""
	if c.Map != nil && c.Map.Result != nil {
		goType = c.Map.Result.GoType
	}
	if d.Variable != nil && d.Variable.GoType == "" {
		d.Variable.GoType = goType
	}
	me, meOK := crashPath(c)
	other, ev, otherOK := otherPath(c)
	d.Paths = nil
	if meOK {
		d.Paths = append(d.Paths, me)
	}
	if otherOK {
		d.Paths = append(d.Paths, other)
	}
	d.Evidence, d.Strength = ev, StrengthOf(ev)
	name := "map " + mapName(d.Variable, goType)
	if strings.HasPrefix(name, "map of type") || strings.HasPrefix(name, "map (") || strings.HasPrefix(name, "map allocated at") {
		name = "a " + name
	}
	g1, g2 := goroutineID(me.Goid), goroutineID(other.Goid)
	var s string
	switch c.Fatal.Kind {
	case KindMapConcurrentWrite:
		if otherOK {
			s = fmt.Sprintf("goroutines %s and %s wrote %s concurrently at %s and %s; guard both with one sync.Mutex, or use sync.Map if the keys are disjoint per goroutine",
				g1, g2, name, me.at(), other.at())
		} else {
			s = fmt.Sprintf("goroutine %s wrote %s at %s while another goroutine wrote it (its code path was not found); guard every write with one sync.Mutex",
				g1, name, me.at())
		}
	case KindMapReadWrite, KindMapIterationWrite, KindMapCloneWrite:
		verb, fix := "read", "guard both with one sync.RWMutex (RLock around the read, Lock around the write)"
		switch c.Fatal.Kind {
		case KindMapIterationWrite:
			verb, fix = "iterated over", "hold one sync.RWMutex for the whole range loop and around the write, or range over a copy taken under the lock"
		case KindMapCloneWrite:
			verb, fix = "cloned", "take the clone under the same lock as the write"
		}
		// The runtime reports the reader (or iterator, cloner) as crasher
		// in most cases, but the writer can be the one that noticed.
		reader, writer, rg, wg := me, other, g1, g2
		if isWriteOp(me.Op) && otherOK && !isWriteOp(other.Op) {
			reader, writer, rg, wg = other, me, g2, g1
		}
		if otherOK || isWriteOp(me.Op) {
			s = fmt.Sprintf("goroutine %s %s %s at %s while goroutine %s wrote it at %s; %s",
				rg, verb, name, reader.at(), wg, writer.at(), fix)
		} else {
			s = fmt.Sprintf("goroutine %s %s %s at %s while another goroutine wrote it (its code path was not found); %s",
				g1, verb, name, me.at(), fix)
		}
	case KindMapCorrupted:
		s = fmt.Sprintf("%s was found corrupted while goroutine %s grew it at %s: the leftover of a concurrent write the runtime's checks missed", upper(name), g1, me.at())
		if otherOK {
			s += fmt.Sprintf("; goroutine %s was also on it at %s", g2, other.at())
		}
		s += "; guard every write with one sync.Mutex"
	default:
		d.Sentence = ""
		d.Signature = Signature(c, d.Variable)
		return
	}
	if d.SyncMap != "" {
		s += fmt.Sprintf(". The map is a value stored in the sync.Map %s: a sync.Map guards its own entries, not the maps stored in them; give the stored map its own mutex, or store a copy and replace it instead of writing into it", d.SyncMap)
	}
	d.Sentence = s
	d.Signature = Signature(c, d.Variable)
}

func upper(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// SignatureVersion is the first part of every signature; bump it when the
// fingerprint's inputs change (old and new crashes then group apart).
const SignatureVersion = "s1"

// Signature is the crash's stable fingerprint: the fatal kind, the two
// code paths' functions (sorted: the same race reaches fatal from either
// side) and the map variable when a source named it. Addresses, build
// ids, paths and lines are left out: lines of a partner inferred from a
// stack vary with where it was stopped, functions do not; a rebuilt copy
// of the same source gives the same signature. Non-map fatal errors use
// the crashing function (the first non-runtime frame) instead.
func Signature(c *Crash, v *Variable) string {
	parts := []string{string(c.Fatal.Kind)}
	if IsMapKind(c.Fatal.Kind) {
		fns := []string{"?", "?"}
		if p, ok := crashPath(c); ok {
			fns[0] = p.Function
		}
		if p, _, ok := otherPath(c); ok {
			fns[1] = p.Function
		}
		sort.Strings(fns)
		parts = append(parts, fns...)
		name := ""
		if v != nil && v.Name != UnknownStripped && v.Source != SourceTypeOnly {
			name = v.Name
			if v.Function != "" {
				name = v.Function + "." + name
			}
		}
		parts = append(parts, name)
	} else {
		parts = append(parts, crashingFunction(c), c.Fatal.Message)
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return SignatureVersion + "-" + hex.EncodeToString(sum[:8])
}

// crashingFunction is the innermost non-runtime frame of the first fatal
// event's goroutine, or its caller function.
func crashingFunction(c *Crash) string {
	if len(c.Fatal.Events) == 0 {
		return ""
	}
	ev := c.Fatal.Events[0]
	for _, g := range c.Goroutines {
		if g.ID != ev.Goid {
			continue
		}
		for _, f := range g.Frames {
			if !strings.HasPrefix(f.Function, "runtime.") && !strings.HasPrefix(f.Function, "internal/runtime/") {
				return f.Function
			}
		}
	}
	return ev.CallerFunction
}

// SignatureOf returns the crash's signature: the stored diagnosis's, else
// computed from the report (crashes stored before diagnoses existed).
func SignatureOf(c *Crash) string {
	if c.Diagnosis != nil && c.Diagnosis.Signature != "" {
		return c.Diagnosis.Signature
	}
	return Signature(c, nil)
}

// SignatureTitle is a short human label of a signature's group: kind and
// the two functions.
func SignatureTitle(c *Crash) string {
	if c.Diagnosis != nil && len(c.Diagnosis.Paths) > 0 {
		var fns []string
		for _, p := range c.Diagnosis.Paths {
			fns = append(fns, p.Function)
		}
		t := string(c.Fatal.Kind) + " " + strings.Join(fns, " / ")
		if v := c.Diagnosis.Variable; v != nil && v.Name != "" {
			t += " on " + v.Name
		}
		return t
	}
	if f := crashingFunction(c); f != "" {
		return string(c.Fatal.Kind) + " " + f
	}
	return string(c.Fatal.Kind)
}
