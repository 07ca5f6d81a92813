package inspect

import (
	"encoding/binary"
	"testing"

	"github.com/mapsentry/mapsentry/goruntime"
)

func layoutFor(t *testing.T, version string) *goruntime.Layout {
	t.Helper()
	v, err := goruntime.ParseVersion(version, "")
	if err != nil {
		t.Fatal(err)
	}
	l, err := goruntime.ForVersion(v, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// putMapType writes a map type descriptor at off of an image mapped at
// base: kind Map, one pointer in size, key/elem/group inside the image.
func putMapType(l *goruntime.Layout, buf []byte, base uint64, off int, unit uint64) {
	le := binary.LittleEndian
	d := buf[off:]
	le.PutUint64(d[l.Type.Size:], 8)
	le.PutUint64(d[l.Type.PtrBytes:], 8)
	d[l.Type.Kind] = kindMap
	if l.Maps == goruntime.MapClassic {
		le.PutUint64(d[l.Classic.TypeKey:], base)
		le.PutUint64(d[l.Classic.TypeElem:], base)
		le.PutUint64(d[l.Classic.TypeBucket:], base)
		le.PutUint16(d[l.Classic.TypeBucketSize:], uint16(unit))
		return
	}
	le.PutUint64(d[l.Swiss.TypeKey:], base)
	le.PutUint64(d[l.Swiss.TypeElem:], base)
	le.PutUint64(d[l.Swiss.TypeGroup:], base)
	le.PutUint64(d[l.Swiss.TypeGroupSize:], unit)
}

func TestMapTypes(t *testing.T) {
	for _, c := range []struct {
		version string
		unit    uint64
	}{{"go1.19.8", 144}, {"go1.26.8", 136}, {"go1.27.3", 136}} {
		l := layoutFor(t, c.version)
		const base = 0x400000
		buf := make([]byte, 1024)
		putMapType(l, buf, base, 64, c.unit)
		putMapType(l, buf, base, 256, c.unit*2)
		// Not a map type: the kind says slice.
		putMapType(l, buf, base, 512, c.unit)
		buf[512+int(l.Type.Kind)] = 23
		// A map type whose key points outside the types range.
		putMapType(l, buf, base, 768, c.unit)
		key := l.Swiss.TypeKey
		if l.Maps == goruntime.MapClassic {
			key = l.Classic.TypeKey
		}
		binary.LittleEndian.PutUint64(buf[768+int(key):], 0x10)
		got, err := mapTypes(buf, base, l)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Addr != base+64 || got[0].Unit != c.unit || got[1].Unit != 2*c.unit {
			t.Fatalf("%s: %+v", c.version, got)
		}
		if m := matching(got, c.unit); len(m) != 1 || m[0].Addr != base+64 {
			t.Fatalf("%s: matching %+v", c.version, m)
		}
	}
}
