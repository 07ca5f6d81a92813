package crashsite

import (
	"encoding/binary"
	"errors"
)

var le = binary.LittleEndian

// DWARF expression and location-list opcodes Go's compiler emits.
const (
	opAddr         = 0x03
	opReg0         = 0x50
	opReg31        = 0x6f
	opRegx         = 0x90
	opFbreg        = 0x91
	opPiece        = 0x93
	opCallFrameCFA = 0x9c

	lleEndOfList    = 0x0
	lleBaseAddressx = 0x1
	lleStartxEndx   = 0x2
	lleStartxLength = 0x3
	lleOffsetPair   = 0x4
	lleDefault      = 0x5
	lleBaseAddress  = 0x6
	lleStartEnd     = 0x7
	lleStartLength  = 0x8
)

// piece is one part of a variable's location: on the stack at CFA+Off
// (Go's frame base is DW_OP_call_frame_cfa), or elsewhere (a register).
type piece struct {
	onStack bool
	off     int64
	size    uint64 // 0: the whole variable
}

var errLoc = errors.New("malformed DWARF location")

// pieces decodes a location expression of the forms Go emits: fbreg(N),
// call_frame_cfa, regN, regx, each optionally followed by piece(size).
func pieces(expr []byte) ([]piece, error) {
	var out []piece
	cur := piece{}
	have := false
	for i := 0; i < len(expr); {
		op := expr[i]
		i++
		switch {
		case op == opCallFrameCFA:
			cur, have = piece{onStack: true}, true
		case op == opFbreg:
			v, n := sleb(expr[i:])
			if n == 0 {
				return nil, errLoc
			}
			i += n
			cur, have = piece{onStack: true, off: v}, true
		case op >= opReg0 && op <= opReg31:
			cur, have = piece{}, true
		case op == opRegx:
			_, n := uleb(expr[i:])
			if n == 0 {
				return nil, errLoc
			}
			i += n
			cur, have = piece{}, true
		case op == opPiece:
			v, n := uleb(expr[i:])
			if n == 0 {
				return nil, errLoc
			}
			i += n
			if !have { // an absent part
				cur = piece{}
			}
			cur.size = v
			out = append(out, cur)
			cur, have = piece{}, false
		default:
			return nil, errLoc
		}
	}
	if have {
		out = append(out, cur)
	}
	return out, nil
}

// locAt returns the location expression of v valid at link pc; fn is the
// function's entry, which Go's location lists take as their base address
// (DWARF 4: a base-address entry naming the function's symbol; DWARF 5:
// DW_LLE_base_addressx of it).
func (d *DebugInfo) locAt(v dwVar, pc, fn uint64) ([]byte, bool) {
	if v.exprloc != nil {
		return v.exprloc, true
	}
	if v.loclist < 0 || int(v.loclist) >= len(d.loc) {
		return nil, false
	}
	if !d.loc5 {
		return locList4(d.loc[v.loclist:], pc, fn)
	}
	r := locList5{b: d.loc[v.loclist:], base: fn, fn: fn}
	return r.at(pc)
}

// maxLocEntries bounds the entries read of one location list: a corrupt
// list must not keep us reading.
const maxLocEntries = 4096

// locList4 finds pc's expression in a DWARF 4 location list (.debug_loc):
// (start, end) pairs relative to the base address, each followed by a
// 2-byte length and the expression; (0, 0) ends the list, (~0, addr) sets
// the base.
func locList4(b []byte, pc, base uint64) ([]byte, bool) {
	for n := 0; n < maxLocEntries && len(b) >= 16; n++ {
		lo, hi := le.Uint64(b), le.Uint64(b[8:])
		b = b[16:]
		switch {
		case lo == 0 && hi == 0:
			return nil, false
		case lo == ^uint64(0):
			base = hi
			continue
		}
		if len(b) < 2 {
			return nil, false
		}
		size := int(le.Uint16(b))
		b = b[2:]
		if size > len(b) {
			return nil, false
		}
		if pc >= base+lo && pc < base+hi {
			return b[:size], true
		}
		b = b[size:]
	}
	return nil, false
}

// locList5 reads a DWARF 5 location list (.debug_loclists): entries of a
// kind byte, operands that depend on the kind, and, for the kinds that
// give a range, a ULEB128 length and the expression.
type locList5 struct {
	b    []byte // what is left of the list
	base uint64 // the base address offset pairs are relative to
	fn   uint64 // the function's entry, what base_addressx names
}

// lleStep is what one DWARF 5 entry's header says to do next.
type lleStep int

const (
	lleStop    lleStep = iota // end of list, or an entry not understood
	lleNext                   // a base-address entry: no expression follows
	lleInRange                // an expression follows, valid in [lo, hi)
	lleSkip                   // an expression follows, its range unknown
)

// at returns the expression valid at pc.
func (r *locList5) at(pc uint64) ([]byte, bool) {
	for n := 0; n < maxLocEntries && len(r.b) > 0; n++ {
		kind := r.b[0]
		r.b = r.b[1:]
		lo, hi, step := r.bounds(kind)
		switch step {
		case lleStop:
			return nil, false
		case lleNext:
			continue
		}
		l, k := uleb(r.b)
		r.b = r.b[k:]
		if l > uint64(len(r.b)) {
			return nil, false
		}
		if step == lleInRange && pc >= lo && pc < hi {
			return r.b[:l], true
		}
		r.b = r.b[l:]
	}
	return nil, false
}

// bounds decodes the operands of one entry of kind: its range, or the new
// base address. Every read is checked against what is left of the list.
func (r *locList5) bounds(kind byte) (lo, hi uint64, step lleStep) {
	switch kind {
	case lleEndOfList:
		return 0, 0, lleStop
	case lleBaseAddressx:
		_, k := uleb(r.b)
		r.b = r.b[k:]
		r.base = r.fn
		return 0, 0, lleNext
	case lleBaseAddress:
		if len(r.b) < 8 {
			return 0, 0, lleStop
		}
		r.base, r.b = le.Uint64(r.b), r.b[8:]
		return 0, 0, lleNext
	case lleOffsetPair:
		start, k1 := uleb(r.b)
		end, k2 := uleb(r.b[k1:])
		r.b = r.b[k1+k2:]
		return r.base + start, r.base + end, lleInRange
	case lleStartEnd:
		if len(r.b) < 16 {
			return 0, 0, lleStop
		}
		lo, hi, r.b = le.Uint64(r.b), le.Uint64(r.b[8:]), r.b[16:]
		return lo, hi, lleInRange
	case lleStartLength:
		if len(r.b) < 8 {
			return 0, 0, lleStop
		}
		lo = le.Uint64(r.b)
		l, k := uleb(r.b[8:])
		hi, r.b = lo+l, r.b[8+k:]
		return lo, hi, lleInRange
	case lleDefault:
		return 0, ^uint64(0), lleInRange
	case lleStartxEndx, lleStartxLength:
		// Indexes into .debug_addr: Go does not emit these for
		// variables; skip the entry.
		_, k1 := uleb(r.b)
		_, k2 := uleb(r.b[k1:])
		r.b = r.b[k1+k2:]
		return 0, 0, lleSkip
	}
	return 0, 0, lleStop
}

func uleb(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}

func sleb(b []byte) (int64, int) {
	var v int64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= int64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if shift := 7 * (i + 1); shift < 64 && b[i]&0x40 != 0 {
				v |= -1 << shift
			}
			return v, i + 1
		}
	}
	return 0, 0
}
