//go:build linux

package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/mapsentry/mapsentry/apitype"
)

// Event is one ring-buffer record (see mapsentry.h struct event).
type Event = mapsentryEvent

// BinConfig is the per-binary configuration the crash probe reads.
type BinConfig = mapsentryBinConfig

// StopState is the probe's record of one process in the stopped map.
type StopState = mapsentryStopState

// Event types, probe kinds, stop phases, flags and hold actions, mirrored
// from mapsentry.h.
const (
	EventFatal = 1
	EventExec  = 2
	EventExit  = 3

	ProbeRuntimeFatal = 1
	ProbeRuntimeThrow = 2
	ProbeMapsFatal    = 3
	ProbeFatalPanic   = 4

	StopSigstop  = 1
	StopReleased = 2
	StopWaiting  = 3
	StopHeld     = 4
	StopUnheld   = 5

	StopFlagSigstopSent = 1
	StopFlagParentSees  = 2
	StopFlagWaitTimeout = 4
	StopFlagTraced      = 8
	StopFlagNoWaiter    = 16
	StopFlagWaiter      = 32 // a thread waits in a slot; its other crashing threads wait without one
	StopFlagClaim       = 64 // a thread decided about the slot (atomically): the others wait

	ActNone     = 0
	ActWait     = 1
	ActSigstop  = 2
	ActHeld     = 3
	ActNoDaemon = 4
	ActTraced   = 5
	ActNoWaiter = 6
	ActUnheld   = 7
)

// EventSize is the size of one ring-buffer record.
const EventSize = int(unsafe.Sizeof(Event{}))

// Cookie builds the uprobe cookie for a binary id and a probe kind.
func Cookie(binID uint32, probe uint8) uint64 { return uint64(binID)<<32 | uint64(probe) }

// Options are daemon-wide settings fixed at load time.
type Options struct {
	// Freeze enables holding crashing processes. Off gives an
	// observe-only mode in which events still flow but nothing is held.
	Freeze bool
	// RingBytes sizes the crash ring buffer (crash and exit events, and
	// nothing else): a power of two, a multiple of the page size. 0 keeps
	// the compiled-in 4 MiB.
	RingBytes uint32
	// ExecRingBytes sizes the exec ring buffer (exec events, apart from
	// crash events so that exec traffic never takes their room). 0 keeps
	// the compiled-in 256 KiB.
	ExecRingBytes uint32
	// KnownExes bounds the files whose execs send no event (an LRU: an
	// entry dropped costs one more event). 0 keeps the compiled-in 16384.
	KnownExes uint32
	// PIDNamespace is the nsfs inode of the PID namespace whose PIDs the
	// events carry and whose processes the probes act on (those of the
	// namespaces below it included; everything outside is ignored). 0: the
	// loading process's own, which is what a daemon looking PIDs up in its
	// own /proc needs.
	PIDNamespace uint32
}

// Kernel is the loaded BPF collection and the links this package owns.
type Kernel struct {
	coll *ebpf.Collection
	maps mapsentryMaps
	// crash and crashMulti are the crash programs attached by probes/:
	// the sleepable ones, which can wait inside the probe, when the
	// kernel takes them (canWait).
	crash, crashMulti *ebpf.Program
	canWait           bool
	// noWait and noMulti say why the sleepable or uprobe_multi programs
	// are not loaded, if they are not.
	noWait, noMulti error
	links           []link.Link
	pidns           uint32
	// stopGen is stop_gen mapped into this process (nil when the kernel
	// would not map it: StopGeneration then looks it up).
	stopGen *ebpf.Memory
	// hold is hold_ctl mapped (or nil); under holdMu, written is the
	// control last written whole (its LiveUntil zero), so a heartbeat
	// with the same bounds only stores LiveUntil, and stopped is set by
	// StopHolding, after which heartbeats write nothing.
	hold    *ebpf.Memory
	holdMu  sync.Mutex
	written *HoldCtl
	stopped bool
}

// programSets are the crash programs to try, best first: sleepable
// (holds wait inside the probe) before not, uprobe_multi before
// perf-event uprobes. Each is {perf-event, multi} program names.
var programSets = []struct {
	single, multi string
	canWait       bool
}{
	{"uprobe_crash", "uprobe_multi_crash", true},
	{"uprobe_crash", "", true},
	{"uprobe_crash_nowait", "uprobe_multi_crash_nowait", false},
	{"uprobe_crash_nowait", "", false},
}

// Load loads and verifies every program. It does not attach anything.
func Load(opts Options) (*Kernel, error) {
	spec, err := loadMapsentry()
	if err != nil {
		return nil, err
	}
	freeze := uint32(0)
	if opts.Freeze {
		freeze = 1
	}
	if err := spec.Variables[mapsentryVarFreezeEnabled].Set(freeze); err != nil {
		return nil, fmt.Errorf("set freeze_enabled: %w", err)
	}
	pidns, err := setPIDNamespace(spec.Variables[mapsentryVarPidnsIno], opts.PIDNamespace)
	if err != nil {
		return nil, err
	}
	for _, r := range []struct {
		name  string
		bytes uint32
	}{{mapsentryMapEvents, opts.RingBytes}, {mapsentryMapExecEvents, opts.ExecRingBytes}} {
		if r.bytes == 0 {
			continue
		}
		if r.bytes&(r.bytes-1) != 0 || r.bytes%4096 != 0 {
			return nil, fmt.Errorf("ring buffer %s of %d bytes: want a power of two, at least 4096", r.name, r.bytes)
		}
		spec.Maps[r.name].MaxEntries = r.bytes
	}
	if opts.KnownExes != 0 {
		spec.Maps[mapsentryMapKnownExes].MaxEntries = opts.KnownExes
	}
	var errs []error
	noMulti := HaveUprobeMulti()
	if noMulti != nil {
		errs = append(errs, noMulti) // the perf-event twins do the same work
	}
	for _, set := range programSets {
		if set.multi != "" && noMulti != nil {
			continue
		}
		k, err := loadSet(spec, set.single, set.multi)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		k.canWait, k.pidns = set.canWait, pidns
		if !set.canWait {
			k.noWait = errors.Join(errs...)
		}
		if set.multi == "" {
			k.noMulti = errors.Join(errs...)
		}
		return k, nil
	}
	return nil, errors.Join(errs...)
}

// loadSet loads the maps, the tracepoints and one pair of crash programs.
func loadSet(spec *ebpf.CollectionSpec, single, multi string) (*Kernel, error) {
	s := spec.Copy()
	keep := map[string]bool{mapsentryProgTpExec: true, mapsentryProgTpExit: true, single: true, multi: true}
	for name := range s.Programs {
		if !keep[name] {
			delete(s.Programs, name)
		}
	}
	coll, err := ebpf.NewCollection(s)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load BPF programs %s %s: %+v", single, multi, ve)
		}
		return nil, fmt.Errorf("load BPF programs %s %s: %w", single, multi, err)
	}
	k := &Kernel{coll: coll, crash: coll.Programs[single], crashMulti: coll.Programs[multi]}
	if err := coll.Assign(&k.maps); err != nil {
		coll.Close()
		return nil, fmt.Errorf("assign BPF maps: %w", err)
	}
	if mem, err := k.maps.StopGen.Memory(); err == nil && mem.Size() >= 8 {
		k.stopGen = mem
	}
	if mem, err := k.maps.Holdctl.Memory(); err == nil && mem.Size() >= uint32(unsafe.Sizeof(HoldCtl{})) {
		k.hold = mem
	}
	return k, nil
}

// AttachTracepoints attaches the exec and exit tracepoints.
func (k *Kernel) AttachTracepoints() error {
	for _, tp := range []struct {
		name string
		prog *ebpf.Program
	}{{"sched_process_exec", k.coll.Programs[mapsentryProgTpExec]}, {"sched_process_exit", k.coll.Programs[mapsentryProgTpExit]}} {
		// Raw tracepoints attach without tracefs, which fleet hosts (and
		// this daemon's sandbox) often do not mount.
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.name, Program: tp.prog})
		if err != nil {
			return fmt.Errorf("attach raw tracepoint %s: %w", tp.name, err)
		}
		k.links = append(k.links, l)
	}
	return nil
}

// PIDNamespace is the nsfs inode of the PID namespace the programs report
// PIDs in; InitPIDNamespace on the host.
func (k *Kernel) PIDNamespace() uint32 { return k.pidns }

// CrashProgram is the perf-event uprobe program for crash functions.
func (k *Kernel) CrashProgram() *ebpf.Program { return k.crash }

// CrashMultiProgram is the uprobe_multi program for crash functions, or nil
// with the reason when this kernel cannot load it.
func (k *Kernel) CrashMultiProgram() (*ebpf.Program, error) {
	if k.crashMulti == nil {
		return nil, fmt.Errorf("uprobe_multi program not loaded: %w", k.noMulti)
	}
	return k.crashMulti, nil
}

// CanWait reports whether the crash programs can hold a crashing thread
// inside the probe (sleepable uprobes), and if not, why.
func (k *Kernel) CanWait() (bool, error) { return k.canWait, k.noWait }

// Events opens a reader on the crash ring buffer (crash and exit events).
// Close it to unblock Read.
func (k *Kernel) Events() (*ringbuf.Reader, error) {
	r, err := ringbuf.NewReader(k.maps.Events)
	if err != nil {
		return nil, fmt.Errorf("open crash ring buffer: %w", err)
	}
	return r, nil
}

// SetBinary stores the configuration of binary id.
func (k *Kernel) SetBinary(id uint32, cfg BinConfig) error {
	if err := k.maps.Binaries.Put(id, cfg); err != nil {
		return fmt.Errorf("set binary %d config: %w", id, err)
	}
	return nil
}

// DeleteBinary forgets binary id.
func (k *Kernel) DeleteBinary(id uint32) error {
	if err := k.maps.Binaries.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete binary %d config: %w", id, err)
	}
	return nil
}

// Counters are the per-CPU counters, summed.
type Counters = apitype.KernelCounters

// Counters reads the per-CPU counters.
func (k *Kernel) Counters() (Counters, error) {
	var c Counters
	dst := []*uint64{&c.RingbufFull, &c.FatalHits, &c.SignalErrors, &c.ExecLost, &c.OtherNamespace,
		&c.Waits, &c.WaitTimeouts, &c.Sigstops, &c.NoDaemon, &c.NotHeld, &c.ExitLost, &c.ExecKnown}
	for i, p := range dst {
		var per []uint64
		if err := k.maps.Counters.Lookup(uint32(i), &per); err != nil {
			return c, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range per {
			*p += v
		}
	}
	return c, nil
}

// Close detaches the tracepoints and frees every object. Links made by
// others with CrashProgram are theirs to close first.
func (k *Kernel) Close() error {
	var errs []error
	for _, l := range k.links {
		errs = append(errs, l.Close())
	}
	k.links = nil
	// The mappings keep their maps alive until the runtime unmaps them
	// (once unreachable).
	k.stopGen, k.hold = nil, nil
	k.coll.Close()
	return errors.Join(errs...)
}

// ParseEvent decodes one crash-ring record.
func ParseEvent(raw []byte) (Event, error) { return parseRecord[Event](raw, "event") }

// parseRecord copies one ring-buffer record into T, the C struct it is
// (native endian: encoding/binary's reflection cost ~10 us a record).
func parseRecord[T any](raw []byte, what string) (T, error) {
	var e T
	size := int(unsafe.Sizeof(e))
	if len(raw) < size {
		return e, fmt.Errorf("%s record of %d bytes, want %d", what, len(raw), size)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&e)), size), raw[:size])
	return e, nil
}

// Message returns the fatal message carried in e, up to the first NUL or
// the captured length. It returns "" when the copy failed: the runtime's messages are in .rodata, whose page
// may never have been touched before the crash, and a uprobe cannot fault
// it in (bpf_probe_read_user then zero-fills). Callers re-read it from the
// frozen process.
func Message(e *Event) string {
	b := e.Msg[:]
	n := e.MsgLen
	if n < uint64(len(b)) {
		b = b[:n]
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return ""
	}
	return strings.ToValidUTF8(string(b), "?")
}

// StackPCs returns the user stack captured at the probe, innermost first.
func StackPCs(e *Event) []uint64 {
	n := int(e.StackBytes) / 8
	if n <= 0 {
		return nil
	}
	if n > len(e.Stack) {
		n = len(e.Stack)
	}
	out := make([]uint64, 0, n)
	for _, pc := range e.Stack[:n] {
		if pc == 0 {
			break
		}
		out = append(out, pc)
	}
	return out
}
