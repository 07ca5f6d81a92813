package procmem

import (
	"bufio"
	"bytes"
	"os"
	"sort"
	"strconv"
)

// mappings are a process's readable address ranges (/proc/PID/maps),
// sorted, adjacent ones joined.
type mappings struct{ lo, hi []uint64 }

// maxMaps bounds the mappings read (a Go process has tens to hundreds).
const maxMaps = 1 << 16

// readMaps reads the readable mappings of pid; an unreadable maps file
// gives nil (every range is then tried).
func readMaps(pid int) *mappings {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return nil
	}
	return parseMaps(b)
}

// parseMaps parses maps lines: "lo-hi perms offset dev inode path".
func parseMaps(b []byte) *mappings {
	m := &mappings{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() && len(m.lo) < maxMaps {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 2 || len(f[1]) == 0 || f[1][0] != 'r' {
			continue
		}
		dash := bytes.IndexByte(f[0], '-')
		if dash < 0 {
			continue
		}
		lo, err1 := strconv.ParseUint(string(f[0][:dash]), 16, 64)
		hi, err2 := strconv.ParseUint(string(f[0][dash+1:]), 16, 64)
		if err1 != nil || err2 != nil || hi <= lo {
			continue
		}
		if k := len(m.lo) - 1; k >= 0 && m.hi[k] == lo {
			m.hi[k] = hi
			continue
		}
		m.lo, m.hi = append(m.lo, lo), append(m.hi, hi)
	}
	return m
}

// holds reports whether [addr, addr+n) lies in one readable range.
func (m *mappings) holds(addr, n uint64) bool {
	i := sort.Search(len(m.hi), func(i int) bool { return m.hi[i] > addr })
	return i < len(m.lo) && m.lo[i] <= addr && addr+n <= m.hi[i] && addr+n >= addr
}

// within is how many of the n bytes from addr lie in the readable range
// addr is in (0 when addr is in none).
func (m *mappings) within(addr, n uint64) uint64 {
	i := sort.Search(len(m.hi), func(i int) bool { return m.hi[i] > addr })
	if i == len(m.lo) || m.lo[i] > addr {
		return 0
	}
	return min(n, m.hi[i]-addr)
}
