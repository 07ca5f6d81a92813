//go:build linux

package bpf

import (
	"testing"
	"time"
	"unsafe"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// The C struct and the generated Go struct must agree byte for byte: the
// ring buffer carries raw memory.
func TestEventLayout(t *testing.T) {
	const want = 4*4 + 8*8 + 6*4 + 8*34 + 128 + 8*64
	if EventSize != want {
		t.Fatalf("Event is %d bytes, C struct event is %d", EventSize, want)
	}
	if off := unsafe.Offsetof(Event{}.Regs); off != 104 {
		t.Fatalf("Event.Regs at %d, want 104", off)
	}
	if s := unsafe.Sizeof(StopState{}); s != 32 {
		t.Fatalf("StopState is %d bytes, want 32", s)
	}
	if s := unsafe.Sizeof(Verdict{}); s != 16 {
		t.Fatalf("Verdict is %d bytes, want 16", s)
	}
	if s := unsafe.Sizeof(HoldCtl{}); s != 24 {
		t.Fatalf("HoldCtl is %d bytes, want 24", s)
	}
	if s := unsafe.Sizeof(BinConfig{}); s != 8 {
		t.Fatalf("BinConfig is %d bytes, want 8", s)
	}
}

// Every program must pass the kernel's verifier, and the tracepoints attach.
func TestLoadThroughVerifier(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, freeze := range []bool{true, false} {
		k, err := Load(Options{Freeze: freeze})
		if err != nil {
			t.Fatalf("load (freeze=%v): %v", freeze, err)
		}
		if err := k.AttachTracepoints(); err != nil {
			k.Close()
			t.Fatal(err)
		}
		if _, err := k.Counters(); err != nil {
			t.Error(err)
		}
		// This kernel runs sleepable uprobes: crashing threads can wait
		// inside the probe (the invisible hold).
		if ok, why := k.CanWait(); !ok {
			t.Errorf("crash programs cannot wait in the probe: %v", why)
		}
		if _, err := k.CrashMultiProgram(); err != nil {
			t.Error(err)
		}
		if err := k.Heartbeat(time.Second, HoldCtl{WaitNs: 1e6, MaxWaiters: 1}); err != nil {
			t.Error(err)
		}
		if err := k.Release(1<<30, 42); err != nil {
			t.Error(err)
		}
		// A verdict alone is not a stop: only the probe creates those.
		if _, ok, err := k.StopOf(1<<30, 42); ok || err != nil {
			t.Errorf("stop of a pid the probe never saw: %v, %v", ok, err)
		}
		if err := k.StopHolding(); err != nil {
			t.Error(err)
		}
		if n, err := k.Waiters(); n != 0 || err != nil {
			t.Errorf("waiters %d, %v", n, err)
		}
		if err := k.Close(); err != nil {
			t.Error(err)
		}
	}
}

// The heartbeat, as the probes read it: the first one writes the whole
// control, the next ones (mapped, same bounds) only LiveUntil, new bounds
// the whole control again, and after StopHolding nothing re-arms it. The
// stop generation starts at zero and is read from the mapping.
func TestHeartbeatAsTheProbesSeeIt(t *testing.T) {
	testenv.RequirePrivileged(t)
	k, err := Load(Options{Freeze: true})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.hold == nil || k.stopGen == nil {
		t.Fatalf("hold control mapped %v, stop generation mapped %v: want both", k.hold != nil, k.stopGen != nil)
	}
	read := func() HoldCtl {
		t.Helper()
		var c HoldCtl
		if err := k.maps.Holdctl.Lookup(uint32(0), &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	bounds := HoldCtl{WaitNs: 1e6, MaxWaiters: 3, Mode: HoldWait}
	var last uint64
	for i, b := range []HoldCtl{bounds, bounds, {WaitNs: 2e6, MaxWaiters: 5, Mode: HoldSigstop}, {WaitNs: 2e6, MaxWaiters: 5, Mode: HoldSigstop}} {
		before := Monotonic()
		if err := k.Heartbeat(3*time.Second, b); err != nil {
			t.Fatal(err)
		}
		got := read()
		if got.LiveUntil < before+uint64(3*time.Second) || got.LiveUntil <= last {
			t.Errorf("beat %d: live until %d, want past %d and %d", i, got.LiveUntil, before+uint64(3*time.Second), last)
		}
		last = got.LiveUntil
		got.LiveUntil = 0
		if got != b {
			t.Errorf("beat %d: bounds %+v, want %+v", i, got, b)
		}
	}
	if err := k.StopHolding(); err != nil {
		t.Fatal(err)
	}
	if err := k.Heartbeat(3*time.Second, bounds); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != (HoldCtl{}) {
		t.Errorf("a heartbeat after StopHolding wrote %+v", got)
	}
	if g, err := k.StopGeneration(); g != 0 || err != nil {
		t.Errorf("stop generation of a new object: %d, %v", g, err)
	}
}

// A fatal message the probe could not copy (its .rodata page not yet
// resident) arrives zero-filled: Message reports it as missing, not as
// a string of NULs that would classify as an unknown fatal error.
func TestMessageOfFailedCopy(t *testing.T) {
	var e Event
	e.Type, e.MsgLen = EventFatal, 34
	if m := Message(&e); m != "" {
		t.Fatalf("zero-filled copy read as %q", m)
	}
	copy(e.Msg[:], "concurrent map read and map write")
	e.MsgLen = 33
	if m := Message(&e); m != "concurrent map read and map write" {
		t.Fatalf("Message = %q", m)
	}
	var x ExecEvent
	copy(x.Filename[:], "/usr/bin/x\x00junk")
	if m := Filename(&x); m != "/usr/bin/x" {
		t.Fatalf("exec filename %q", m)
	}
}
