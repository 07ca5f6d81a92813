package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mapsentry/mapsentry/internal/coreanalysis"
	"github.com/mapsentry/mapsentry/internal/corefile"
	"github.com/mapsentry/mapsentry/internal/threadregs"
	"github.com/mapsentry/mapsentry/report"
)

// CoreStage copies a compact ELF core of the held process (its writable
// memory and every thread's registers, crashing thread first) into memory
// — at most MaxBytes — and writes it under Dir once the process is
// released (the disk never extends a freeze), keeping the newest Keep
// cores. The report references it.
type CoreStage struct {
	Dir      string
	MaxBytes int64
	Keep     int
}

func (CoreStage) Name() string { return "core" }

func (s CoreStage) Capture(ctx context.Context, t *Target, c *report.Crash) error {
	if t.Binary != nil && t.Binary.Arch != "" && t.Binary.Arch != "amd64" {
		return fmt.Errorf("cores are written for amd64 only, not %s", t.Binary.Arch)
	}
	// A process held through ptrace answers only its tracer, which read
	// every thread's registers; one not held is seized briefly here.
	regs := t.Regs
	if regs == nil {
		var err error
		if regs, err = threadregs.Ptrace(t.ID.PID); len(regs) == 0 {
			return fmt.Errorf("thread registers: %w", err)
		}
	}
	// Debuggers take the first thread as the current one: the crasher.
	first := int(t.Events[0].Tid)
	threads := make([]corefile.Thread, 0, len(regs))
	if r, ok := regs[first]; ok {
		threads = append(threads, corefile.Thread{TID: first, Regs: r})
	}
	tids := make([]int, 0, len(regs))
	for tid := range regs {
		if tid != first {
			tids = append(tids, tid)
		}
	}
	sort.Ints(tids)
	for _, tid := range tids {
		threads = append(threads, corefile.Thread{TID: tid, Regs: regs[tid]})
	}
	snap, err := corefile.Copy(t.ID.PID, t.Mem, threads, corefile.Options{MaxBytes: s.MaxBytes})
	if err != nil {
		return err
	}
	t.core = snap
	return nil
}

// Finish writes the core copied while the process was held.
func (s CoreStage) Finish(t *Target, c *report.Crash) error {
	if t.core == nil {
		return nil
	}
	defer func() { t.core = nil }() // its memory goes with it
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("create core dir: %w", err)
	}
	path := filepath.Join(s.Dir, c.ID+".core")
	res, err := t.core.WriteTo(path)
	if err != nil && !errors.Is(err, corefile.ErrTooLarge) {
		os.Remove(path)
		return err
	}
	c.Capture.Core = &report.Core{Path: res.Path, Segments: res.Segments, Threads: res.Threads,
		Copied: res.Copied, OnDisk: res.OnDisk, Truncated: res.Truncated}
	s.prune(path)
	return nil
}

// prune keeps the newest Keep cores (crash ids are time-ordered, so file
// names sort by age); keep is the one just written.
func (s CoreStage) prune(keep string) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return
	}
	var cores []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".core") {
			cores = append(cores, e.Name())
		}
	}
	sort.Strings(cores)
	for i := 0; i < len(cores)-s.Keep; i++ {
		if p := filepath.Join(s.Dir, cores[i]); p != keep {
			os.Remove(p)
		}
	}
}

// DelveStage reads the saved core with delve after the process was
// resumed: the crashing goroutine's frames with their arguments' and
// locals' names and types (values with Values), for binaries with DWARF.
type DelveStage struct {
	Values bool
}

func (DelveStage) Name() string { return "delve" }

// Capture does nothing while frozen: delve reads the core afterwards.
func (DelveStage) Capture(context.Context, *Target, *report.Crash) error { return nil }

func (s DelveStage) Finish(t *Target, c *report.Crash) error {
	if c.Capture.Core == nil || t.Binary == nil || !t.Binary.HasDWARF || len(t.Events) == 0 {
		return nil // no core, or a stripped binary: nothing for delve to add
	}
	goid := t.Events[0].Goid
	if t.siteEvent != nil {
		goid = t.siteEvent.Goid
	}
	frames, err := coreanalysis.Frames(c.Capture.Core.Path, t.Binary.Path, goid, coreanalysis.Options{Values: s.Values})
	if err != nil {
		frames.Error = err.Error()
	}
	c.Frames = frames
	return nil
}
