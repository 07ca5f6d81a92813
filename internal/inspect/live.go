package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/apitype/live"
	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// Errors callers branch on (the API maps them to HTTP statuses).
var (
	// ErrBusy: the process is already held, by a crash capture or by
	// another live decode or dump.
	ErrBusy = errors.New("process busy")
	// ErrRefused: a request mapsentry will not carry out (its own process,
	// a bad pid or address, not a Go program).
	ErrRefused = errors.New("refused")
)

// Config bounds live operations.
type Config struct {
	// FreezeMax is the hard limit on one freeze (freeze.max): the process
	// is resumed then even if reading is not finished.
	FreezeMax time.Duration
	// StopWait bounds the wait for every thread to stop (freeze.stop_wait).
	StopWait time.Duration
	// MaxBytes bounds the memory read per operation (capture.max_bytes).
	MaxBytes int64
	// DebugHold keeps the process stopped this long after reading
	// (capture.debug_hold; tests use it to cancel a request mid-freeze).
	// The deadline and cancellation still end it.
	DebugHold time.Duration
}

// Inspector runs live decode and dump operations, one at a time per
// process.
type Inspector struct {
	cfg   Config
	hooks Hooks
	log   *slog.Logger

	bins    binCache   // binaries inspected by recent operations
	buffers copyBuffer // the last operation's copy buffer, for the next one

	mu      sync.Mutex
	active  map[int]string // pid -> operation
	holds   map[int]*hold  // pid -> its freeze, while stopped
	stopped bool           // Stop was called: no new freezes
}

// New makes an Inspector.
func New(cfg Config, hooks Hooks, log *slog.Logger) *Inspector {
	if cfg.FreezeMax <= 0 {
		cfg.FreezeMax = 2 * time.Second
	}
	if cfg.StopWait <= 0 || cfg.StopWait > cfg.FreezeMax {
		cfg.StopWait = min(cfg.FreezeMax, 500*time.Millisecond)
	}
	return &Inspector{cfg: cfg, hooks: hooks, log: log.With("component", "inspect"), active: map[int]string{}, holds: map[int]*hold{}}
}

// Process is what a live answer says about its target.
type Process = apitype.Process

// DecodeRequest is the body of POST /v1/decode.
type DecodeRequest = apitype.DecodeRequest

// DecodeResult is the answer of POST /v1/decode.
type DecodeResult = live.DecodeResult

// DumpRequest is the body of POST /v1/dump.
type DumpRequest = apitype.DumpRequest

// DumpResult is the answer of POST /v1/dump.
type DumpResult = live.DumpResult

// Copy is what a live operation copied while held (the answers' copy).
type Copy = apitype.Copy

// copyReport fills the answers' copy from the copy's own accounting.
func copyReport(st procmem.CopyStats, reserved uint64, prepare, copied, analysed time.Duration) *Copy {
	c := &Copy{Bytes: st.Bytes, Ranges: st.Ranges, Calls: st.Calls, CutRanges: st.CutRanges,
		CutBytes: st.CutBytes, StaticBytes: st.StaticBytes, ReservedBytes: int64(reserved),
		PrepareNS: prepare.Nanoseconds(), CopyNS: copied.Nanoseconds(), AnalyseNS: analysed.Nanoseconds()}
	for _, cut := range st.Cuts {
		c.Cuts = append(c.Cuts, apitype.Cut{Addr: cut.Addr, Len: cut.Len, Bound: cut.Bound, Reason: cut.Reason})
	}
	return c
}

// target is a process about to be inspected, its binary read.
type target struct {
	id  procmem.Identity
	bin *probes.Binary
	p   Process
}

// begin claims pid for op and reads its binary — all before any stop, so
// the freeze is spent on the process's memory only. end must be called.
func (in *Inspector) begin(pid int, op string) (*target, func(), error) {
	if pid <= 0 {
		return nil, nil, fmt.Errorf("pid %d: %w", pid, ErrRefused)
	}
	if pid == os.Getpid() {
		return nil, nil, fmt.Errorf("pid %d is the daemon itself: %w", pid, ErrRefused)
	}
	in.mu.Lock()
	if in.stopped {
		in.mu.Unlock()
		return nil, nil, fmt.Errorf("pid %d: the daemon is stopping: %w", pid, ErrBusy)
	}
	if other, ok := in.active[pid]; ok {
		in.mu.Unlock()
		return nil, nil, fmt.Errorf("pid %d: a live %s is in progress: %w", pid, other, ErrBusy)
	}
	in.active[pid] = op
	in.mu.Unlock()
	end := func() {
		in.mu.Lock()
		delete(in.active, pid)
		delete(in.holds, pid)
		in.mu.Unlock()
	}
	id, err := procmem.IdentityOf(pid)
	if err != nil {
		end()
		return nil, nil, err
	}
	exe := "/proc/" + strconv.Itoa(pid) + "/exe"
	bin, done, err := in.binary(exe)
	if bin == nil {
		end()
		if errors.Is(err, probes.ErrNotGo) || errors.Is(err, os.ErrPermission) {
			return nil, nil, fmt.Errorf("pid %d: %w: %v", pid, ErrRefused, err)
		}
		return nil, nil, fmt.Errorf("inspect binary of pid %d: %w", pid, err)
	}
	// An error past this point is about crash probes (no fatal function,
	// an entry that fails the prologue check): reading memory is still fine.
	t := &target{id: id, bin: bin, p: Process{
		PID: pid, StartTime: id.StartTime, GoVersion: bin.GoVersion, MapLayout: bin.MapLayout,
		Stripped: bin.Stripped, HasDWARF: bin.HasDWARF,
	}}
	if p, err := os.Readlink(exe); err == nil {
		t.p.Exe = strings.TrimSuffix(p, " (deleted)")
	}
	return t, func() { done(); end() }, nil
}

// Decode stops the process, copies the map at req.Addr, resumes it, and
// decodes the copy.
func (in *Inspector) Decode(ctx context.Context, req DecodeRequest) (*DecodeResult, error) {
	if req.Addr == 0 || req.Addr%8 != 0 {
		return nil, fmt.Errorf("map address %#x: not an aligned pointer: %w", req.Addr, ErrRefused)
	}
	started := time.Now()
	t, end, err := in.begin(req.PID, "decode")
	if err != nil {
		return nil, err
	}
	defer end()
	mem, err := procmem.Open(req.PID, in.cfg.MaxBytes)
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	cp := mem.Copy()
	op, err := in.prepareDecode(mem, cp, t.bin, req)
	if err != nil {
		return nil, err
	}
	// Before the stop too: the buffer for the copy, its pages mapped now
	// rather than while held.
	scratch, free := in.buffers.scratch(scratchSize)
	reserve := hmapdecode.Estimate(ctx, &scratchMem{Reader: mem, buf: scratch}, op.dreq)
	free()
	defer in.buffers.reserve(cp, reserve)()

	prepare := time.Since(started)
	h, dctx, release, err := in.hold(ctx, t.id)
	defer release()
	if err != nil {
		return nil, err
	}
	copyStart := time.Now()
	err = op.copy(dctx, cp, h)
	copyNS := time.Since(copyStart).Nanoseconds()
	in.debugHold(ctx, h)
	h.resume("done")
	fr := h.result()
	if err != nil {
		return nil, fmt.Errorf("decode map at %#x in pid %d: %w", req.Addr, req.PID, err)
	}

	// After the resume: everything below reads the copy only.
	img := cp.Image()
	analyse := time.Now()
	res, fits, err := op.analyse(ctx, img, fr)
	if err != nil {
		return nil, err
	}
	if req.Summary && res != nil {
		res.Tables = nil
	}
	cs := copyReport(cp.Stats(), reserve, prepare, time.Duration(copyNS), time.Since(analyse))
	return &DecodeResult{Process: t.p, Freeze: fr, Copy: cs, Map: res, TypeCandidates: fits}, nil
}

// mapDecode is one Decode: the request as the decoder takes it, and, for
// a request without a type, the binary's map types that may name the map
// (or why they could not be listed) and the request with the one that
// fits, once what it points to was copied too.
type mapDecode struct {
	req     DecodeRequest
	bin     *probes.Binary
	dreq    hmapdecode.Request
	typed   hmapdecode.Request
	cands   []TypeCandidate
	candErr error
}

// prepareDecode makes the decoder's request, all before the stop. A PIE
// binary's type descriptors sit at their link address plus the process's
// load bias. Without a type, the binary's map types are listed: they are
// read-only data, the same while the process runs, and are kept in the
// copy for naming.
func (in *Inspector) prepareDecode(mem *procmem.Reader, cp *procmem.Copy, b *probes.Binary, req DecodeRequest) (*mapDecode, error) {
	var bias uint64
	if b.PIE {
		var err error
		if bias, err = procmem.LoadBias(req.PID, b.Entry); err != nil {
			return nil, err
		}
	}
	typesBase := b.TypesBase
	if typesBase != 0 {
		typesBase += bias
	}
	op := &mapDecode{req: req, bin: b,
		dreq: hmapdecode.Request{Addr: req.Addr, Layout: b.Layout, TypeAddr: req.TypeAddr, TypesBase: typesBase, Keys: req.Keys}}
	if req.TypeAddr == 0 {
		op.cands, op.candErr = in.candidates(mem, cp, b, bias)
	}
	return op, nil
}

// copy copies the map while the process is held, and what the one
// candidate type that fits it points to.
func (op *mapDecode) copy(dctx context.Context, cp *procmem.Copy, h *hold) error {
	rep, err := hmapdecode.Copy(dctx, cp, op.dreq)
	op.typed = op.dreq
	if err != nil {
		return err
	}
	op.copyCandidate(dctx, cp, h, rep.Unit)
	return nil
}

// copyCandidate: without a type, the decoder infers the bucket or group
// size (unit) from the map's memory; when exactly one of the binary's map
// types has that size it is the type, and what it points to is copied
// too, while the process is still held. op.typed names it only when that
// copy worked.
func (op *mapDecode) copyCandidate(dctx context.Context, cp *procmem.Copy, h *hold, unit uint64) {
	if op.req.TypeAddr != 0 || op.candErr != nil || unit == 0 {
		return
	}
	if fits := matching(op.cands, unit); len(fits) == 1 && !h.resumed() {
		op.typed.TypeAddr = fits[0].Addr
		if _, err := hmapdecode.Copy(dctx, cp, op.typed); err != nil {
			op.typed.TypeAddr = 0
		}
	}
}

// analyse decodes the copy after the resume: it names the map's type from
// the candidates when the request had none, notes a freeze that ended
// before the copy was complete, and names the candidates it lists (at
// most maxListedByName) from the copied type descriptors.
func (op *mapDecode) analyse(ctx context.Context, img *procmem.Image, fr Freeze) (*hmapdecode.Result, []TypeCandidate, error) {
	res, err := hmapdecode.Decode(ctx, img, op.dreq)
	if err != nil {
		return nil, nil, fmt.Errorf("decode map at %#x in pid %d: %w", op.req.Addr, op.req.PID, err)
	}
	res, note, fits := op.matchType(ctx, img, res)
	if fr.ResumedBy != "done" && fr.ResumedBy != "crash_capture" {
		note = joinNote(note, fmt.Sprintf("the process was resumed before the copy was complete (%s after %s): what is missing is reported as unreadable or truncated",
			fr.ResumedBy, time.Duration(fr.FrozenNS)))
	}
	res.Note = joinNote(res.Note, note)
	if len(fits) > maxListedByName {
		fits = fits[:maxListedByName]
	}
	for i := range fits {
		fits[i].GoType, _ = typeName(img, op.dreq.Layout, op.dreq.TypesBase, fits[i].Addr)
	}
	return res, fits, nil
}

// matchType matches the unit size the decoder inferred from the copy
// against the binary's map types, when the request had no type. The one
// type that fits and was copied while held decodes the map again, with
// keys and names; otherwise the note says why the type is unknown, and
// the types that fit are returned as candidates.
func (op *mapDecode) matchType(ctx context.Context, img *procmem.Image, res *hmapdecode.Result) (*hmapdecode.Result, string, []TypeCandidate) {
	if op.candErr != nil {
		return res, "type unknown: map types not listed: " + op.candErr.Error(), nil
	}
	if op.req.TypeAddr != 0 {
		return res, "", nil
	}
	cands, word := op.cands, unitWord(op.bin.MapLayout)
	var note string
	unit := unitOf(res)
	fits := matching(cands, unit)
	switch {
	case unit == 0:
		note = fmt.Sprintf("type unknown: the map's memory did not reveal its slot geometry, so none of the binary's %d map types could be matched; pass --type-addr", len(cands))
		fits = nil
	case len(fits) == 1 && op.typed.TypeAddr == fits[0].Addr:
		if r2, err2 := hmapdecode.Decode(ctx, img, op.typed); err2 == nil && r2.TypeSource == "descriptor" {
			res = r2
			note = fmt.Sprintf("type found: the only one of the binary's %d map type descriptors with a %d-byte %s, which the decoder inferred from the map's memory", len(cands), unit, word)
		}
		fits = nil
	case len(fits) == 0:
		note = fmt.Sprintf("type unknown: none of the binary's %d map type descriptors has the inferred %d-byte %s", len(cands), unit, word)
	case len(fits) == 1:
		note = fmt.Sprintf("type candidate: the only one of the binary's %d map types with the inferred %d-byte %s (type_candidates) could not be copied with the map before the hold ended; pass --type-addr", len(cands), unit, word)
	default:
		note = fmt.Sprintf("type ambiguous: %d of the binary's map types have the inferred %d-byte %s (type_candidates); pass --type-addr for keys and type names", len(fits), unit, word)
	}
	return res, note, fits
}

// freeze stops id and tracks the hold so Stop can resume it.
// hold freezes id for one live operation: dctx ends at freeze.max, and
// release (always deferred) resumes the process unless it already was.
func (in *Inspector) hold(ctx context.Context, id procmem.Identity) (h *hold, dctx context.Context, release func(), err error) {
	h, err = in.freeze(ctx, id)
	if h == nil {
		return nil, ctx, func() {}, err
	}
	dctx, cancel := context.WithDeadline(ctx, h.t0.Add(in.cfg.FreezeMax))
	release = func() {
		cancel()
		h.resume("error")
	}
	return h, dctx, release, err
}

func (in *Inspector) freeze(ctx context.Context, id procmem.Identity) (*hold, error) {
	h, err := freeze(ctx, id, in.cfg.FreezeMax, in.cfg.StopWait, in.hooks, in.log)
	if h == nil {
		return nil, err
	}
	in.mu.Lock()
	stopped := in.stopped
	if !stopped {
		in.holds[id.PID] = h
	}
	in.mu.Unlock()
	if stopped {
		h.resume("shutdown")
		return h, errors.Join(err, fmt.Errorf("pid %d: the daemon is stopping: %w", id.PID, ErrBusy))
	}
	return h, err
}

// Stop resumes every process a live operation holds and refuses new ones.
// The daemon calls it when it shuts down: its HTTP server may give up on a
// request before freeze.max has passed, and a process must not outlive the
// daemon stopped.
func (in *Inspector) Stop() {
	in.mu.Lock()
	in.stopped = true
	holds := make([]*hold, 0, len(in.holds))
	for _, h := range in.holds {
		holds = append(holds, h)
	}
	in.mu.Unlock()
	for _, h := range holds {
		h.resume("shutdown")
	}
	in.bins.close()
	in.buffers.close()
}

// debugHold waits cfg.DebugHold while the process is held, unless the
// freeze already ended or the request is canceled.
func (in *Inspector) debugHold(ctx context.Context, h *hold) {
	if in.cfg.DebugHold <= 0 {
		return
	}
	t := time.NewTimer(in.cfg.DebugHold)
	defer t.Stop()
	select {
	case <-t.C:
	case <-h.done:
	case <-ctx.Done():
	}
}

func unitWord(layout string) string {
	if layout == "classic" {
		return "bucket"
	}
	return "group"
}

func joinNote(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// candidates lists the binary's map type descriptors from the process's
// read-only data, and keeps that data in the copy (descriptors and type
// names do not change while the process runs).
func (in *Inspector) candidates(mem *procmem.Reader, cp *procmem.Copy, b *probes.Binary, bias uint64) ([]TypeCandidate, error) {
	md := b.Table.Moduledata()
	if md == nil || md.Types == 0 || md.ETypes <= md.Types {
		return nil, errors.New("moduledata types range not found")
	}
	n := md.ETypes - md.Types
	if n > maxTypesBytes {
		return nil, fmt.Errorf("types range of %d bytes is larger than %d", n, maxTypesBytes)
	}
	buf := make([]byte, n)
	if _, err := mem.ReadAt(buf, md.Types+bias); err != nil {
		return nil, fmt.Errorf("read type descriptors: %w", err)
	}
	cp.Insert(md.Types+bias, buf)
	return mapTypes(buf, md.Types+bias, b.Layout)
}

// Dump stops the process, copies every goroutine's bytes and resumes it;
// stacks are unwound and frames named from the copy after the resume.
func (in *Inspector) Dump(ctx context.Context, req DumpRequest) (*DumpResult, error) {
	started := time.Now()
	t, end, err := in.begin(req.PID, "dump")
	if err != nil {
		return nil, err
	}
	defer end()
	if t.bin.Allgs == 0 {
		return nil, fmt.Errorf("pid %d: runtime.allgs not found (%s): %w", req.PID, t.bin.AllgsErr, ErrRefused)
	}
	mem, err := procmem.Open(req.PID, in.cfg.MaxBytes)
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	var bias uint64
	if t.bin.PIE { // runtime addresses are link addresses plus the load bias
		if bias, err = procmem.LoadBias(req.PID, t.bin.Entry); err != nil {
			return nil, err
		}
	}
	cp := mem.Copy()
	var reserve uint64
	if opt, err := GoroutineOptions(ctx, t.bin, bias); err == nil {
		reserve = symbolizer.EstimateCopy(mem, opt)
		defer in.buffers.reserve(cp, reserve)()
	}
	prepare := time.Since(started)
	h, dctx, release, err := in.hold(ctx, t.id)
	defer release()
	if err != nil {
		return nil, err
	}
	copyStart := time.Now()
	snap, _, err := CopyGoroutines(dctx, req.PID, cp, t.bin, bias, nil)
	copyNS := time.Since(copyStart).Nanoseconds()
	in.debugHold(ctx, h)
	h.resume("done")
	fr := h.result()
	if err != nil {
		return nil, err
	}
	analyse := time.Now()
	if err := snap.Analyse(cp.Image(), t.bin.Table); err != nil {
		return nil, fmt.Errorf("goroutines of pid %d: %w", req.PID, err)
	}
	out := &DumpResult{Process: t.p, Freeze: fr, Threads: snap.Threads, Truncated: snap.Truncated, Errors: snap.Errors}
	if fr.ResumedBy != "done" && fr.ResumedBy != "crash_capture" {
		out.Errors = append(out.Errors, fmt.Sprintf("the process was resumed before the copy was complete (%s after %s)",
			fr.ResumedBy, time.Duration(fr.FrozenNS)))
	}
	out.Goroutines = snap.Symbolize(t.bin.Table)
	out.Copy = copyReport(cp.Stats(), reserve, prepare, time.Duration(copyNS), time.Since(analyse))
	return out, nil
}
