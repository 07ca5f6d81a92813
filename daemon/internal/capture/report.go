package capture

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/goruntime"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/report"
)

// probeName names the function a probe kind is attached to.
func probeName(kind uint32) string {
	switch kind {
	case bpf.ProbeRuntimeFatal:
		return "runtime.fatal"
	case bpf.ProbeRuntimeThrow:
		return "runtime.throw"
	case bpf.ProbeMapsFatal:
		return "internal/runtime/maps.fatal"
	case bpf.ProbeFatalPanic:
		return "runtime.fatalpanic"
	}
	return fmt.Sprintf("probe kind %d", kind)
}

// buildReport starts the report: the process's identity and its events.
func (c *Capturer) buildReport(s *session, events []bpf.Event, bin *probes.Binary, bias uint64) *report.Crash {
	at := wallOf(s.first.Ktime)
	cr := &report.Crash{
		Schema: report.Schema, ID: report.NewID(at), Host: c.cfg.Host, CapturedAt: at.UTC(),
		Process: report.Process{PID: s.pid, StartTime: s.id.StartTime},
	}
	proc := "/proc/" + strconv.Itoa(s.pid)
	if exe, err := os.Readlink(proc + "/exe"); err == nil {
		cr.Process.Exe = strings.TrimSuffix(exe, " (deleted)")
	} else {
		cr.Capture.Errors = append(cr.Capture.Errors, fmt.Sprintf("read exe: %v", err))
	}
	if c.cfg.IncludeCmdline {
		if b, err := readBounded(proc+"/cmdline", 64<<10); err == nil {
			cr.Process.Cmdline = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
	}
	// The container's view: its own PID, cgroup, unit or container id.
	ct := probes.ContainerOf("/proc", s.pid)
	cr.Process.NSPID, cr.Process.Cgroup, cr.Process.Unit, cr.Process.Container = ct.NSPID, ct.Cgroup, ct.Unit, ct.ID
	if bin != nil {
		cr.Process.GoVersion = bin.GoVersion
		cr.Process.MapLayout = bin.MapLayout
		cr.Process.Stripped = bin.Stripped
		cr.Process.BuildID = bin.BuildID
	}
	wallOff := wallOffset()
	for i := range events {
		cr.Fatal.Events = append(cr.Fatal.Events, eventFromBPF(&events[i], bin, bias, wallOff))
	}
	return cr
}

// eventFromBPF converts a ring-buffer event; bin may be nil. bias is the
// PIE load bias.
func eventFromBPF(ev *bpf.Event, bin *probes.Binary, bias uint64, wallOff int64) report.Event {
	e := report.Event{
		TID: int(ev.Tid), Goid: ev.Goid, KTimeNS: ev.Ktime,
		WallTime: time.Unix(0, int64(ev.Ktime)+wallOff).UTC(),
		Function: probeName(ev.Probe), Caller: ev.RetAddr,
		Stack: bpf.StackPCs(ev),
	}
	if ev.GoidErr != 0 {
		e.Goid = -1
	}
	if len(e.Stack) > 0 {
		e.PC = e.Stack[0]
	}
	if bin != nil && ev.RetAddr != 0 {
		e.CallerFunction = bin.FuncName(ev.RetAddr - 1 - bias)
	}
	if ev.Probe != bpf.ProbeFatalPanic {
		e.Message = bpf.Message(ev)
	}
	return e
}

// maxMessage bounds a fatal message re-read from memory.
const maxMessage = 4096

// fillMessage sets the fatal message and kind. The BPF copy holds the first
// 128 bytes; longer messages are re-read from the frozen process. For an
// unrecovered panic the message is the panic value when it is a string.
func (c *Capturer) fillMessage(cr *report.Crash, events []bpf.Event, mem *procmem.Reader, bin *probes.Binary, bias uint64) {
	// Prefer the map/fatal event over a nested throw: the first in time.
	ev := events[0]
	fn := probeName(ev.Probe)
	if fn == "internal/runtime/maps.fatal" {
		fn = "runtime.fatal"
	}
	var msg string
	if ev.Probe == bpf.ProbeFatalPanic {
		msg = "panic"
		if bin != nil && bin.Layout != nil && mem != nil {
			msg = panicMessage(mem, ev.MsgPtr, bin.Layout.PanicArg)
		}
	} else {
		var err error
		if msg, err = readMessage(&ev, mem, bin, bias); err != nil {
			cr.Capture.Errors = append(cr.Capture.Errors, err.Error())
		}
	}
	cr.Fatal.Message = msg
	cr.Fatal.Kind = report.Classify(msg, fn)
	// Events whose BPF copy failed get theirs from memory too.
	for i := range cr.Fatal.Events {
		if i < len(events) && cr.Fatal.Events[i].Message == "" && events[i].Probe != bpf.ProbeFatalPanic {
			cr.Fatal.Events[i].Message, _ = readMessage(&events[i], mem, bin, bias)
		}
	}
}

// readMessage returns a fatal event's message: the BPF copy when it is
// whole (the probe cannot fault in a page not yet mapped), else read from
// the frozen process, else from the binary — the runtime's fatal messages
// are string constants — at the link address (bounded).
func readMessage(ev *bpf.Event, mem *procmem.Reader, bin *probes.Binary, bias uint64) (string, error) {
	if m := bpf.Message(ev); m != "" && ev.MsgLen <= uint64(len(ev.Msg)) {
		return m, nil
	}
	n := ev.MsgLen
	if n > maxMessage {
		n = maxMessage
	}
	buf := make([]byte, n)
	err := errors.New("process memory not readable")
	if mem != nil {
		if _, err = mem.ReadAt(buf, ev.MsgPtr); err == nil {
			return strings.ToValidUTF8(string(buf), "?"), nil
		}
	}
	if bin != nil && bin.Table != nil && ev.MsgPtr >= bias && n > 0 {
		if _, ferr := bin.Table.ReadStatic(buf, ev.MsgPtr-bias); ferr == nil {
			return strings.ToValidUTF8(string(buf), "?"), nil
		}
	}
	return bpf.Message(ev), fmt.Errorf("read fatal message: %w", err)
}

// panicMessage reads the value of an unrecovered panic: fatalpanic's
// argument is *runtime._panic, whose arg is an eface at argOff. A string
// value is read; anything else is named as such.
func panicMessage(mem *procmem.Reader, p uint64, argOff goruntime.Offset) string {
	var hdr [16]byte
	if p == 0 || !argOff.Known() {
		return "panic"
	}
	if _, err := mem.ReadAt(hdr[:], p+uint64(argOff)); err != nil {
		return "panic"
	}
	typ := le64(hdr[0:])
	data := le64(hdr[8:])
	if typ == 0 || data == 0 {
		return "panic: nil"
	}
	// abi.Type.Kind_ at +23; kind String = 24.
	var kind [1]byte
	if _, err := mem.ReadAt(kind[:], typ+23); err != nil || kind[0]&0x1f != 24 {
		return "panic: (non-string value)"
	}
	var sh [16]byte
	if _, err := mem.ReadAt(sh[:], data); err != nil {
		return "panic"
	}
	ptr, n := le64(sh[:]), le64(sh[8:])
	if n > maxMessage {
		n = maxMessage
	}
	buf := make([]byte, n)
	if _, err := mem.ReadAt(buf, ptr); err != nil {
		return "panic"
	}
	return "panic: " + strings.ToValidUTF8(string(buf), "?")
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// wallOffset converts CLOCK_MONOTONIC (bpf_ktime_get_ns) to wall-clock ns.
func wallOffset() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Now().UnixNano() - ts.Nano()
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, max)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return nil, err
	}
	return buf[:n], nil
}

// ResumeOrphans resumes processes the BPF side froze that no session owns
// (a stop that outlived its session by more than twice the freeze limit).
