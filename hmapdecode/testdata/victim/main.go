// Command victim holds maps of several shapes for hmapdecode's live tests.
// It prints one JSON line per map (name, header address, type descriptor
// address, len, key digest), then "READY", then waits on stdin: a line
// "grow" makes it insert a 9th entry into the 8-entry map "write8", whose
// growth the test catches with a uprobe while the write is in progress.
//
// Built with Go 1.19, 1.26 and 1.27 (hence go 1.19 in go.mod and no newer
// library calls).
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"
)

// Session is a pointer-heavy value type.
type Session struct {
	ID   int64
	Name string
	Tags []string
	Next *Session
}

// Rec is a struct value type.
type Rec struct {
	A int64
	B string
	C [3]int32
}

type info struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Type    string `json:"type"`
	Len     int    `json:"len"`
	Digest  string `json:"digest"`
	KeyKind string `json:"key_kind"`
}

// keep holds every map so none is collected.
var keep []interface{}

func digest(keys [][]byte) string {
	var sum uint64
	for _, k := range keys {
		h := fnv.New64a()
		h.Write(k)
		sum += h.Sum64()
	}
	return strconv.FormatUint(sum, 16)
}

func i64(k int64) []byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(k))
	return b[:]
}

func report(name string, m interface{}, n int, keys [][]byte, kind string) {
	keep = append(keep, m)
	// For a map in an interface, the data word is the map pointer itself.
	w := (*[2]uintptr)(unsafe.Pointer(&m))
	b, _ := json.Marshal(info{Name: name, Addr: fmt.Sprintf("%#x", w[1]), Type: fmt.Sprintf("%#x", w[0]), Len: n, Digest: digest(keys), KeyKind: kind})
	fmt.Println(string(b))
}

func ints(name string, m map[int64]int64) {
	var keys [][]byte
	for k := range m {
		keys = append(keys, i64(k))
	}
	report(name, m, len(m), keys, "int64")
}

func classic() bool {
	v := runtime.Version()
	return strings.HasPrefix(v, "go1.19") || strings.HasPrefix(v, "go1.2") && len(v) > 5 && v[4] < '4' && v[5] == '.'
}

func main() {
	large := 100000
	if len(os.Args) > 1 {
		large, _ = strconv.Atoi(os.Args[1])
	}
	empty := make(map[int64]int64)
	ints("empty", empty)

	small := map[int64]int64{}
	for i := int64(1); i <= 5; i++ {
		small[i*7] = i
	}
	ints("small", small)

	// Insert until a classic map is mid-grow (oldbuckets set) with at
	// least 100 entries; on Swiss maps there is no incremental growth and
	// this is just a 100+ entry map.
	grow := map[int64]int64{}
	for i := int64(0); ; i++ {
		grow[i*3+1] = i
		if len(grow) < 100 {
			continue
		}
		if !classic() {
			break
		}
		hdr := *(*unsafe.Pointer)(unsafe.Pointer(&grow))
		if *(*uintptr)(unsafe.Add(hdr, 24)) != 0 { // hmap.oldbuckets
			break
		}
	}
	ints("midgrow", grow)

	big := make(map[int64]int64)
	for i := int64(0); i < int64(large); i++ {
		big[i*2654435761] = i
	}
	ints("large", big)

	strs := map[string]int{}
	var skeys [][]byte
	for i := 0; i < 5000; i++ {
		k := fmt.Sprintf("key-%d-%s", i, strings.Repeat("x", i%7))
		strs[k] = i
		skeys = append(skeys, []byte(k))
	}
	report("strings", strs, len(strs), skeys, "string")

	recs := map[int64]Rec{}
	for i := int64(0); i < 3000; i++ {
		recs[i] = Rec{A: i, B: "r" + strconv.Itoa(int(i)), C: [3]int32{1, 2, int32(i)}}
	}
	var rkeys [][]byte
	for k := range recs {
		rkeys = append(rkeys, i64(k))
	}
	report("structs", recs, len(recs), rkeys, "int64")

	sess := map[string]*Session{}
	var pkeys [][]byte
	var prev *Session
	for i := 0; i < 2000; i++ {
		k := "sess-" + strconv.Itoa(i)
		s := &Session{ID: int64(i), Name: k, Tags: []string{"a", k}, Next: prev}
		prev = s
		sess[k] = s
		pkeys = append(pkeys, []byte(k))
	}
	report("pointers", sess, len(sess), pkeys, "string")

	del := map[int64]int64{}
	for i := int64(0); i < 10000; i++ {
		del[i] = i
	}
	for i := int64(0); i < 10000; i++ {
		if i%10 != 3 {
			delete(del, i)
		}
	}
	ints("deleted", del)

	// Keys and values above 128 bytes are stored indirectly.
	type bigKey [144]byte
	ind := map[bigKey][160]byte{}
	var ikeys [][]byte
	for i := 0; i < 100; i++ {
		var k bigKey
		copy(k[:], fmt.Sprintf("indirect-%d", i))
		k[143] = byte(i)
		ind[k] = [160]byte{byte(i)}
		ikeys = append(ikeys, append([]byte(nil), k[:]...))
	}
	report("indirect", ind, len(ind), ikeys, "bytes")

	write8 := map[int64]int64{}
	for i := int64(1); i <= 8; i++ {
		write8[i] = i
	}
	ints("write8", write8)

	fmt.Println("READY")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "grow" {
			write8[9] = 9
			fmt.Println("GREW")
		}
	}
	runtime.KeepAlive(keep)
}
