package goruntime

import (
	"debug/dwarf"
	"errors"
	"fmt"
)

// maxDWARFEntries bounds the walk of a binary's DWARF: a hostile or corrupt
// binary must not keep us reading forever.
const maxDWARFEntries = 5_000_000

// StructFields returns the byte offsets of the named top-level fields of the
// named struct type (dotted paths like "sched.sp" reach into embedded
// structs). Fields not found are absent from the result.
func StructFields(d *dwarf.Data, typeName string, fields ...string) (map[string]int64, error) {
	r := d.Reader()
	for n := 0; n < maxDWARFEntries; n++ {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("read DWARF looking for %s: %w", typeName, err)
		}
		if e == nil {
			return nil, fmt.Errorf("DWARF type %s: not found", typeName)
		}
		if e.Tag != dwarf.TagStructType {
			continue
		}
		if name, _ := e.Val(dwarf.AttrName).(string); name != typeName {
			r.SkipChildren()
			continue
		}
		t, err := d.Type(e.Offset)
		if err != nil {
			return nil, fmt.Errorf("DWARF type %s: %w", typeName, err)
		}
		st, ok := t.(*dwarf.StructType)
		if !ok {
			return nil, fmt.Errorf("DWARF type %s: not a struct", typeName)
		}
		out := make(map[string]int64, len(fields))
		for _, f := range fields {
			if off, ok := fieldPath(st, f); ok {
				out[f] = off
			}
		}
		return out, nil
	}
	return nil, errors.New("DWARF walk bound exceeded")
}

func fieldPath(st *dwarf.StructType, path string) (int64, bool) {
	var base int64
	cur := st
	for {
		name, rest, more := cut(path)
		var found *dwarf.StructField
		for _, f := range cur.Field {
			if f.Name == name {
				found = f
				break
			}
		}
		if found == nil {
			return 0, false
		}
		base += found.ByteOffset
		if !more {
			return base, true
		}
		// Go's DWARF names struct fields' types through typedefs
		// (runtime.g.sched is a typedef of runtime.gobuf).
		ft := found.Type
		for i := 0; i < 8; i++ {
			td, ok := ft.(*dwarf.TypedefType)
			if !ok {
				break
			}
			ft = td.Type
		}
		next, ok := ft.(*dwarf.StructType)
		if !ok {
			return 0, false
		}
		cur, path = next, rest
	}
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// ApplyDWARF overrides the table offsets with what the binary's DWARF says.
// A field the DWARF lacks keeps its table value; a table value that DWARF
// contradicts is replaced (the binary is the authority).
func (l *Layout) ApplyDWARF(d *dwarf.Data) error {
	gf, err := StructFields(d, "runtime.g", "stack.lo", "stack.hi", "m", "sched.sp", "sched.pc",
		"sched.bp", "syscallbp", "atomicstatus", "goid", "waitsince", "waitreason", "gopc",
		"startpc", "lockedm")
	if err != nil {
		return fmt.Errorf("runtime.g from DWARF: %w", err)
	}
	set := func(dst *Offset, m map[string]int64, k string) {
		if v, ok := m[k]; ok {
			*dst = Offset(v)
		}
	}
	set(&l.G.StackLo, gf, "stack.lo")
	set(&l.G.StackHi, gf, "stack.hi")
	set(&l.G.M, gf, "m")
	set(&l.G.SchedSP, gf, "sched.sp")
	set(&l.G.SchedPC, gf, "sched.pc")
	set(&l.G.SchedBP, gf, "sched.bp")
	set(&l.G.SyscallBP, gf, "syscallbp")
	set(&l.G.AtomicStatus, gf, "atomicstatus")
	set(&l.G.Goid, gf, "goid")
	set(&l.G.WaitSince, gf, "waitsince")
	set(&l.G.WaitReason, gf, "waitreason")
	set(&l.G.GoPC, gf, "gopc")
	set(&l.G.StartPC, gf, "startpc")
	set(&l.G.LockedM, gf, "lockedm")
	if mf, err := StructFields(d, "runtime.m", "g0", "curg", "procid", "p", "id", "lockedg"); err == nil {
		set(&l.M.G0, mf, "g0")
		set(&l.M.Curg, mf, "curg")
		set(&l.M.ProcID, mf, "procid")
		set(&l.M.P, mf, "p")
		set(&l.M.ID, mf, "id")
		set(&l.M.LockedG, mf, "lockedg")
	}
	l.Source = "dwarf"
	return nil
}
