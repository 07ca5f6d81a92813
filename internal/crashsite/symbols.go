package crashsite

import "github.com/mapsentry/mapsentry/symbolizer"

// Symbols resolves runtime PCs of the target process to functions and
// source lines.
type Symbols interface {
	FuncForPC(pc uint64) (symbolizer.Func, bool)
	PCToFrames(pc uint64) []symbolizer.Frame
	// SPDelta is f's frame size so far at pc (pclntab pcsp), f as given
	// by FuncForPC.
	SPDelta(f *symbolizer.Func, pc uint64) (int64, error)
}

// Biased returns the symbols of a binary loaded bias bytes above its link
// addresses (a PIE under ASLR); with bias 0 it is the table itself.
func Biased(t *symbolizer.Table, bias uint64) Symbols {
	if bias == 0 {
		return t
	}
	return biased{t: t, bias: bias}
}

type biased struct {
	t    *symbolizer.Table
	bias uint64
}

func (b biased) FuncForPC(pc uint64) (symbolizer.Func, bool) {
	f, ok := b.t.FuncForPC(pc - b.bias)
	if ok {
		f.Entry += b.bias
		f.End += b.bias
	}
	return f, ok
}

func (b biased) SPDelta(f *symbolizer.Func, pc uint64) (int64, error) {
	u := *f
	u.Entry -= b.bias
	u.End -= b.bias
	return b.t.SPDelta(&u, pc-b.bias)
}

func (b biased) PCToFrames(pc uint64) []symbolizer.Frame {
	frs := b.t.PCToFrames(pc - b.bias)
	for i := range frs {
		frs[i].PC += b.bias
		if frs[i].Entry != 0 {
			frs[i].Entry += b.bias
		}
	}
	return frs
}

// StaticCode reads the binary's file-backed memory (its code) at run-time
// addresses of a binary loaded bias bytes above its link addresses:
// readable after the process is gone.
func StaticCode(t *symbolizer.Table, bias uint64) Memory { return staticCode{t: t, bias: bias} }

type staticCode struct {
	t    *symbolizer.Table
	bias uint64
}

func (s staticCode) ReadAt(p []byte, addr uint64) (int, error) {
	return s.t.ReadStatic(p, addr-s.bias)
}
