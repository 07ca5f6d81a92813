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
	b := d.loc[v.loclist:]
	base := fn
	if !d.loc5 {
		for n := 0; n < 4096 && len(b) >= 16; n++ {
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
			n := int(le.Uint16(b))
			b = b[2:]
			if n > len(b) {
				return nil, false
			}
			if pc >= base+lo && pc < base+hi {
				return b[:n], true
			}
			b = b[n:]
		}
		return nil, false
	}
	for n := 0; n < 4096 && len(b) > 0; n++ {
		kind := b[0]
		b = b[1:]
		var lo, hi uint64
		ok := true
		switch kind {
		case lleEndOfList:
			return nil, false
		case lleBaseAddressx:
			_, k := uleb(b)
			b = b[k:]
			base = fn
			continue
		case lleBaseAddress:
			if len(b) < 8 {
				return nil, false
			}
			base, b = le.Uint64(b), b[8:]
			continue
		case lleOffsetPair:
			var k1, k2 int
			lo, k1 = uleb(b)
			hi, k2 = uleb(b[k1:])
			b = b[k1+k2:]
			lo, hi = base+lo, base+hi
		case lleStartEnd:
			if len(b) < 16 {
				return nil, false
			}
			lo, hi, b = le.Uint64(b), le.Uint64(b[8:]), b[16:]
		case lleStartLength:
			if len(b) < 8 {
				return nil, false
			}
			lo = le.Uint64(b)
			l, k := uleb(b[8:])
			hi, b = lo+l, b[8+k:]
		case lleDefault:
			lo, hi = 0, ^uint64(0)
		case lleStartxEndx, lleStartxLength:
			// Indexes into .debug_addr: Go does not emit these for
			// variables; skip the entry.
			_, k1 := uleb(b)
			_, k2 := uleb(b[k1:])
			b = b[k1+k2:]
			ok = false
		default:
			return nil, false
		}
		l, k := uleb(b)
		b = b[k:]
		if l > uint64(len(b)) {
			return nil, false
		}
		if ok && pc >= lo && pc < hi {
			return b[:l], true
		}
		b = b[l:]
	}
	return nil, false
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
