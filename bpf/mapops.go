//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"sort"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// MapOp is one map operation the flight recorder saw (mapops.h struct mapop).
type MapOp = mapopsMapop

// MapOp kinds (mapops.h enum mapop_kind). Kinds up to MapOpClear are writes.
const (
	MapOpAssign    = 1
	MapOpDelete    = 2
	MapOpClear     = 3
	MapOpAccess    = 4
	MapOpIterStart = 5
	MapOpIterNext  = 6
)

// Where a map-op probe finds the map (mapops.h enum mapop_conv).
const (
	MapArg1   = 1    // runtime.mapX(t, m, ...)
	MapArg0   = 2    // receiver first: (*Map).X(m, ...)
	MapIter24 = 3    // mapiternext(it): map at it+24
	Caller2   = 0x80 // also record the caller's caller (probed wrappers)
)

// MapOpWriters is how many recent writers are kept per (pid, map).
const MapOpWriters = 8

// MapOpSize is the size of one record; a test checks it against the C.
const MapOpSize = int(unsafe.Sizeof(MapOp{}))

// MapOpCookie builds the cookie of a map-op uprobe: binary id, where the
// map is (conv, with Caller2) and the op.
func MapOpCookie(binID uint32, conv, op uint8) uint64 {
	return uint64(binID)<<32 | uint64(conv)<<8 | uint64(op)
}

// OpName names a map-op kind the way report.Partner.Op does.
func OpName(op uint32) string {
	switch op {
	case MapOpAssign:
		return "assign"
	case MapOpDelete:
		return "delete"
	case MapOpClear:
		return "clear"
	case MapOpAccess:
		return "access"
	case MapOpIterStart, MapOpIterNext:
		return "iterate"
	}
	return ""
}

// MapOps is the loaded flight recorder: its programs and its two LRU maps.
// It is separate from Kernel so that a daemon with map-op probes off pays
// only for loading it.
type MapOps struct {
	objs mapopsObjects
	// noMulti says why the uprobe_multi programs are not loaded, if not.
	noMulti error
}

// LoadMapOps loads and verifies the flight recorder. It attaches nothing.
// Its records carry PIDs and TIDs of the caller's own PID namespace, as the
// crash probes' events do (Options.PIDNamespace).
func LoadMapOps() (*MapOps, error) { return loadMapOpsIn(0) }

// loadMapOpsIn loads the flight recorder for PID namespace pidns (0: the
// caller's own).
func loadMapOpsIn(pidns uint32) (*MapOps, error) {
	spec, err := loadMapops()
	if err != nil {
		return nil, err
	}
	if _, err := setPIDNamespace(spec.Variables[mapopsVarPidnsIno], pidns); err != nil {
		return nil, err
	}
	m := &MapOps{}
	if m.noMulti = HaveUprobeMulti(); m.noMulti != nil {
		// Their perf-event twins do the same work.
		delete(spec.Programs, mapopsProgUprobeMultiMapop)
		delete(spec.Programs, mapopsProgUprobeMultiMapopEmpty)
	}
	if err := spec.LoadAndAssign(&m.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load map-op programs: %+v", ve)
		}
		return nil, fmt.Errorf("load map-op programs: %w", err)
	}
	return m, nil
}

// Program is the perf-event uprobe program for map functions: one link per
// function, and CAP_SYS_ADMIN on Linux 6.18. The fallback for MultiProgram.
func (m *MapOps) Program() *ebpf.Program { return m.objs.UprobeMapop }

// MultiProgram is the uprobe_multi program for map functions (one link for
// all of a binary's), or nil with the reason when this kernel cannot load it.
func (m *MapOps) MultiProgram() (*ebpf.Program, error) {
	if m.objs.UprobeMultiMapop == nil {
		return nil, fmt.Errorf("uprobe_multi program not loaded: %w", m.noMulti)
	}
	return m.objs.UprobeMultiMapop, nil
}

// EmptyProgram and EmptyMultiProgram do nothing: benchmarks attach them to
// measure the cost of a uprobe hit alone. EmptyMultiProgram is nil when
// MultiProgram is.
func (m *MapOps) EmptyProgram() *ebpf.Program      { return m.objs.UprobeMapopEmpty }
func (m *MapOps) EmptyMultiProgram() *ebpf.Program { return m.objs.UprobeMultiMapopEmpty }

// ProgramIDs are the kernel's ids of the two recording programs (the
// uprobe_multi one first, when loaded), to count their links.
func (m *MapOps) ProgramIDs() ([]ebpf.ProgramID, error) {
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{m.objs.UprobeMultiMapop, m.objs.UprobeMapop} {
		if p == nil {
			continue
		}
		info, err := p.Info()
		if err != nil {
			return nil, fmt.Errorf("map-op program info: %w", err)
		}
		id, ok := info.ID()
		if !ok {
			return nil, errors.New("map-op program info: kernel gives no program id")
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// KernelLinks counts the links the kernel has for the recording programs,
// whoever made them: the cross-check of the manager's own accounting.
func (m *MapOps) KernelLinks() (int, error) {
	ids, err := m.ProgramIDs()
	if err != nil {
		return 0, err
	}
	return CountLinks(ids...)
}

// CountLinks counts the kernel's links of the programs ids.
func CountLinks(ids ...ebpf.ProgramID) (int, error) {
	n := 0
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue // gone meanwhile, or a type that gives no info
		}
		for _, id := range ids {
			if info.Program == id {
				n++
			}
		}
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("iterate links: %w", err)
	}
	return n, nil
}

// ThreadOp returns the last read or iteration thread tid made, if
// recorded (writes are in the rings: Writers, ThreadWrite).
func (m *MapOps) ThreadOp(tid uint32) (MapOp, bool, error) {
	var op MapOp
	err := m.objs.MapopThreads.Lookup(tid, &op)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return op, false, nil
	}
	if err != nil {
		return op, false, fmt.Errorf("read last map op of thread %d: %w", tid, err)
	}
	return op, true, nil
}

// ThreadWrite returns the newest write of thread tid of process pid still
// in any map's ring: writes are recorded only there. It scans every ring
// (at most 4096): for a crash whose map the frame walk did not find.
func (m *MapOps) ThreadWrite(pid, tid uint32) (MapOp, bool, error) {
	var (
		key  mapopsMapopWkey
		ring mapopsMapopWriters
		best MapOp
		ok   bool
	)
	it := m.objs.MapopWriterRings.Iterate()
	for it.Next(&key, &ring) {
		if key.Pid != pid {
			continue
		}
		for _, w := range ring.W {
			if w.Pid == pid && w.Tid == tid && w.Ktime > best.Ktime {
				best, ok = w, true
			}
		}
	}
	if err := it.Err(); err != nil {
		return best, ok, fmt.Errorf("scan writer rings for thread %d: %w", tid, err)
	}
	return best, ok, nil
}

// Writers returns the recent writers of map addr in process pid, newest
// first (at most MapOpWriters).
func (m *MapOps) Writers(pid uint32, addr uint64) ([]MapOp, error) {
	var ring mapopsMapopWriters
	key := mapopsMapopWkey{Pid: pid, Map: addr}
	err := m.objs.MapopWriterRings.Lookup(key, &ring)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read writers of map %#x in pid %d: %w", addr, pid, err)
	}
	out := make([]MapOp, 0, MapOpWriters)
	for _, w := range ring.W {
		if w.Ktime != 0 && w.Pid == pid && w.Map == addr {
			out = append(out, w)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ktime > out[j].Ktime })
	return out, nil
}

// Close frees the program and maps. Links to Program must be closed first.
func (m *MapOps) Close() error { return m.objs.Close() }
