package hmapdecode

import (
	"testing"
)

// decodeWith decodes with the given worker count and returns the result
// as JSON without the read accounting (which counts a redone walk twice).
func decodeWith(t *testing.T, mem Memory, req Request, workers int) string {
	t.Helper()
	req.Keys = false // entries are listed by one walk only
	req.Limits.Workers = workers
	req.Limits.chunkBytes = 2 * 144 // several reads (and ranges) even in small maps
	return decodeJSON(t, mem, req)
}

// TestParallelEqualsOneWalk: every synthetic map, clean or damaged,
// decodes to the same result whether one goroutine walks it or several.
func TestParallelEqualsOneWalk(t *testing.T) {
	cases := damagedMaps(t)
	big := newClassic(6, true)
	big.fill(900) // chains of up to 2 overflow buckets per bucket
	cases = append(cases, synthMap{"classic/chains", big.m, big.req(t)})
	shared := newClassic(6, true)
	shared.fill(600)
	ovf := shared.overflow(shared.bucket(60))
	shared.m.put64(shared.bucket(3)+classicBS-8, ovf) // reached from two ranges
	cases = append(cases, synthMap{"classic/shared-across-ranges", shared.m, shared.req(t)})
	grow := growing(t)
	cases = append(cases, synthMap{"classic/growing", grow.m, grow.req(t)})
	for _, v := range []string{"go1.26.8", "go1.27.3"} {
		s := newSwiss(v, false)
		a, b, c := twoTables(s)
		s.m.put8(binary64(s, b)+3, 0x91) // an illegal control byte in table b
		_ = a
		_ = c
		cases = append(cases, synthMap{"swiss/tables-" + v, s.m, s.req(t)})
	}
	limited := newClassic(6, true)
	limited.fill(900)
	lreq := limited.req(t)
	lreq.Limits.MaxBuckets = 70 // the limit falls inside the overflow buckets
	cases = append(cases, synthMap{"classic/bucket-limit", limited.m, lreq})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			one := decodeWith(t, c.mem, c.req, 1)
			for _, w := range []int{2, 3, 5} {
				if got := decodeWith(t, c.mem, c.req, w); got != one {
					t.Errorf("%d workers:\n%s\none walk:\n%s", w, got, one)
				}
			}
		})
	}
}

// synthMap is a synthetic map to decode.
type synthMap struct {
	name string
	mem  Memory
	req  Request
}

// damagedMaps are the clean maps damaged one way each (the anomaly tests'
// cases), classic and Swiss.
func damagedMaps(t *testing.T) []synthMap {
	var cases []synthMap
	for _, m := range classicMutations() {
		c := newClassic(2, false)
		m.mut(c)
		cases = append(cases, synthMap{"classic/" + m.code, c.m, c.req(t)})
	}
	for _, m := range swissMutations() {
		s := newSwiss("go1.26.8", false)
		m.mut(s)
		cases = append(cases, synthMap{"swiss/" + m.code, s.m, s.req(t)})
	}
	return cases
}

// binary64 is the groups address of the table at tb.
func binary64(s *swissImg, tb uint64) uint64 {
	b := s.m.at(tb+16, 8)
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		w    []uint64
		k    int
		want []int
	}{
		{[]uint64{1, 1, 1, 1}, 2, []int{0, 2, 4}},
		{[]uint64{4, 1, 1, 1, 1}, 2, []int{0, 1, 5}},
		{[]uint64{1, 1}, 4, []int{0, 1, 2, 2, 2}},
		{nil, 3, []int{0, 0, 0, 0}},
	} {
		got := split(tc.w, tc.k)
		if len(got) != len(tc.want) {
			t.Errorf("split(%v, %d) = %v, want %v", tc.w, tc.k, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("split(%v, %d) = %v, want %v", tc.w, tc.k, got, tc.want)
				break
			}
		}
	}
}

func TestZeroBytes(t *testing.T) {
	for _, x := range []uint64{0, ^uint64(0), 0x0100010001000100, 0x80_00_7f_01_00_ff_80_00, 0x0000000000000001} {
		var want uint64
		for i := 0; i < 8; i++ {
			if byte(x>>(8*i)) == 0 {
				want |= 0x80 << (8 * i)
			}
		}
		if got := zeroBytes(x); got != want {
			t.Errorf("zeroBytes(%#x) = %#x, want %#x", x, got, want)
		}
	}
}
