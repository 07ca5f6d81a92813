//go:build linux

package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// HoldCtl is the daemon's side of the hold (mapsentry.h struct hold_ctl).
type HoldCtl = mapsentryHoldCtl

// Verdict is the daemon's decision about one process.
type Verdict = mapsentryVerdict

// Hold modes (HoldCtl.Mode).
const (
	HoldWait    = 0
	HoldSigstop = 1
)

// Monotonic is CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns, of
// every event's Ktime and of HoldCtl.LiveUntil.
func Monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Heartbeat lets the probes hold crashing processes for the next liveFor
// with these bounds. The daemon repeats it well within liveFor: a daemon
// that stops heart-beating (stuck, or stopping) gets no new holds, so
// none can be left waiting for it. With the bounds unchanged and the
// control mapped, it is one 8-byte store (LiveUntil is the first field).
// After StopHolding it writes nothing.
func (k *Kernel) Heartbeat(liveFor time.Duration, ctl HoldCtl) error {
	if !k.canWait {
		ctl.Mode = HoldSigstop
	}
	ctl.LiveUntil = 0
	k.holdMu.Lock()
	defer k.holdMu.Unlock()
	if k.stopped {
		return nil
	}
	until := Monotonic() + uint64(liveFor)
	if k.hold != nil && k.written != nil && *k.written == ctl {
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], until)
		if _, err := k.hold.WriteAt(b[:], 0); err == nil {
			return nil
		}
	}
	bounds := ctl
	ctl.LiveUntil = until
	if err := k.maps.Holdctl.Put(uint32(0), ctl); err != nil {
		k.written = nil
		return fmt.Errorf("write hold control: %w", err)
	}
	k.written = &bounds
	return nil
}

// StopHolding makes every later probe hit run on unheld: the first step of
// a stop. Threads already waiting inside a probe go on waiting, for the
// sessions their events start (or their bound). Later heartbeats write
// nothing.
func (k *Kernel) StopHolding() error {
	k.holdMu.Lock()
	defer k.holdMu.Unlock()
	k.stopped, k.written = true, nil
	if err := k.maps.Holdctl.Put(uint32(0), HoldCtl{}); err != nil {
		return fmt.Errorf("stop holding: %w", err)
	}
	return nil
}

// MarkHeld tells the probe that every thread of process (pid,
// startBoottimeNS) is seized and interrupted: threads waiting inside the
// probe leave it and stop in ptrace-stop on their way out.
func (k *Kernel) MarkHeld(pid uint32, startBoottimeNS uint64) error {
	if err := k.maps.Verdicts.Put(pid, Verdict{State: StopHeld, StartBoottime: startBoottimeNS}); err != nil {
		return fmt.Errorf("mark pid %d held: %w", pid, err)
	}
	return nil
}

// Release marks process (pid, startBoottimeNS) released: later crash probe
// hits in it neither wait nor stop. Must be written before the process is
// let go, or a second crashing thread stops it again.
func (k *Kernel) Release(pid uint32, startBoottimeNS uint64) error {
	if err := k.maps.Verdicts.Put(pid, Verdict{State: StopReleased, StartBoottime: startBoottimeNS}); err != nil {
		return fmt.Errorf("mark pid %d released: %w", pid, err)
	}
	return nil
}

// Stop is what the kernel side knows of one process the probes touched.
type Stop struct {
	StopState
	// Verdict is the daemon's decision (StopHeld, StopReleased), or 0.
	Verdict uint64
}

// Phase is the effective state: the daemon's verdict if there is one,
// else the probe's.
func (s Stop) Phase() uint64 {
	if s.Verdict != 0 {
		return s.Verdict
	}
	return s.State
}

// StopOf returns the kernel side's record of pid, if it has one for this
// identity.
func (k *Kernel) StopOf(pid uint32, startBoottimeNS uint64) (Stop, bool, error) {
	var s Stop
	err := k.maps.Stopped.Lookup(pid, &s.StopState)
	if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && s.StartBoottime != startBoottimeNS) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("look up stop state of %d: %w", pid, err)
	}
	var v Verdict
	if err := k.maps.Verdicts.Lookup(pid, &v); err == nil && v.StartBoottime == startBoottimeNS {
		s.Verdict = v.State
	}
	return s, true, nil
}

// StopGeneration counts the stop states the probes created so far, each
// counted after it is in the map: read it before StopStates, and an
// unchanged count after a listing that found none means there is still
// none. A memory read, without a system call, where the kernel maps the
// counter.
func (k *Kernel) StopGeneration() (uint64, error) {
	if k.stopGen != nil {
		var b [8]byte
		if _, err := k.stopGen.ReadAt(b[:], 0); err == nil {
			return binary.NativeEndian.Uint64(b[:]), nil
		}
	}
	var n uint64
	if err := k.maps.StopGen.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("read stop generation: %w", err)
	}
	return n, nil
}

// StopStates lists every process the probes touched.
func (k *Kernel) StopStates() (map[uint32]Stop, error) {
	out := make(map[uint32]Stop)
	var (
		pid uint32
		st  StopState
		v   Verdict
	)
	it := k.maps.Stopped.Iterate()
	for it.Next(&pid, &st) {
		out[pid] = Stop{StopState: st}
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterate stop states: %w", err)
	}
	it = k.maps.Verdicts.Iterate()
	for it.Next(&pid, &v) {
		if s, ok := out[pid]; ok && s.StartBoottime == v.StartBoottime {
			s.Verdict = v.State
			out[pid] = s
		}
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterate verdicts: %w", err)
	}
	return out, nil
}

// Waiters is how many threads wait inside crash probes right now.
func (k *Kernel) Waiters() (int64, error) {
	var n int64
	if err := k.maps.Waiters.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("read waiters: %w", err)
	}
	return n, nil
}
