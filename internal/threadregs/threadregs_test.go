package threadregs

import "testing"

func TestParseSyscall(t *testing.T) {
	cases := []struct {
		in     string
		pc, sp uint64
		wantOK bool
	}{
		{"202 0x5b1e28 0x80 0x0 0x0 0x0 0x0 0x7ffd2a1c5e58 0x46e3a3\n", 0x46e3a3, 0x7ffd2a1c5e58, true},
		{"-1 0xc000049f50 0x4a2cb6\n", 0x4a2cb6, 0xc000049f50, true},
		{"running\n", 0, 0, false},
		{"", 0, 0, false},
		{"-1 zz 0x1\n", 0, 0, false},
	}
	for _, c := range cases {
		r, ok := parseSyscall(c.in)
		if ok != c.wantOK || r.PC != c.pc || r.SP != c.sp {
			t.Errorf("%q: %+v %v", c.in, r, ok)
		}
	}
}
