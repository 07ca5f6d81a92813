package capture

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
	"github.com/mapsentry/mapsentry/report"
)

// LoopBudget bounds what one crash loop costs: per loop (the same binary
// crashing of the same kind at the same code path) at most MaxFull full
// captures per Interval; every other crash of the loop in that interval
// is released at once and only counted (store.LoopSummary). A full
// capture is bounded by freeze.max and capture.max_bytes, so one loop
// costs at most MaxFull of those per interval, and one summary record.
type LoopBudget struct {
	MaxFull  int
	Interval time.Duration
}

// maxLoops bounds the loops tracked at once.
const maxLoops = 4096

type loopBudget struct {
	cfg   LoopBudget
	mu    sync.Mutex
	loops map[string]*loopWindow
	// alias maps a crash-site loop key to its signature's key once a full
	// capture has shown the signature: both sides of one race (the crash
	// reaches fatal from either) are then one loop.
	alias map[string]string
}

type loopWindow struct {
	start time.Time
	full  int
	// binKind is "binary/kind" of the crashes it counts; site is true
	// while it is a crash site's window whose signature no capture has
	// shown yet.
	binKind string
	site    bool
	// last full capture of the loop: its signature and report.
	signature, title, exampleID string
}

func newLoopBudget(cfg LoopBudget) *loopBudget {
	if cfg.MaxFull <= 0 || cfg.Interval <= 0 {
		return nil
	}
	return &loopBudget{cfg: cfg, loops: map[string]*loopWindow{}, alias: map[string]string{}}
}

// admit says whether a crash of loop key at now gets a full capture, and
// the start of its interval.
func (b *loopBudget) admit(key string, now time.Time) (bool, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	binKind, aliased := binKindOf(key), false
	if k, ok := b.alias[key]; ok {
		key, aliased = k, true
	}
	w := b.loops[key]
	if w == nil || now.Sub(w.start) >= b.cfg.Interval {
		if w == nil && len(b.loops) >= maxLoops {
			clear(b.alias)
			for k, o := range b.loops { // drop expired windows, else any one
				if now.Sub(o.start) >= b.cfg.Interval {
					delete(b.loops, k)
				}
			}
			if len(b.loops) >= maxLoops {
				for k := range b.loops {
					delete(b.loops, k)
					break
				}
			}
		}
		if w == nil {
			w = &loopWindow{binKind: binKind, site: !aliased}
			b.loops[key] = w
		}
		w.start, w.full = now, 0
	}
	// Until a capture shows a crash site's signature, its crashes may be
	// either side of a race already counted (or another race of the same
	// kind in the same binary): they share the binary's and kind's
	// budget with every window not yet joined to a signature, so that one
	// loop never gets more than MaxFull full captures.
	pending := 0
	for _, o := range b.loops {
		if o != w && o.binKind == w.binKind && (o.site || w.site) && now.Sub(o.start) < b.cfg.Interval {
			pending += o.full
		}
	}
	if w.full+pending >= b.cfg.MaxFull {
		return false, w.start
	}
	w.full++
	return true, w.start
}

// binKindOf is the "binary/kind" part of a crash-site loop key.
func binKindOf(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[:i]
	}
	return key
}

// remember records a loop's latest full capture, for its summaries, and
// joins the crash-site loop to its signature's: its captures count
// towards the signature's budget from then on.
func (b *loopBudget) remember(key string, c *report.Crash) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sig := report.SignatureOf(c)
	bin, _, _ := strings.Cut(key, "/")
	sigKey := bin + "/" + sig
	site := key
	if k, ok := b.alias[key]; ok {
		site = ""
		key = k
	}
	if key != sigKey {
		b.alias[key] = sigKey
		if w := b.loops[key]; w != nil {
			if sw := b.loops[sigKey]; sw == nil {
				w.site = false
				b.loops[sigKey] = w
			} else if w.start.Equal(sw.start) || w.start.After(sw.start) {
				sw.full += w.full
			}
			delete(b.loops, key)
		}
		if site != "" {
			b.alias[site] = sigKey
		}
		key = sigKey
	}
	if w := b.loops[key]; w != nil {
		w.signature, w.title, w.exampleID = sig, report.SignatureTitle(c), c.ID
	}
}

func (b *loopBudget) last(key string) (sig, title, id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.alias[key]; ok {
		key = k
	}
	if w := b.loops[key]; w != nil {
		return w.signature, w.title, w.exampleID
	}
	return "", "", ""
}

// loopKey names a crash's loop from its first fatal event: the binary,
// the fatal kind (from the probe's copy of the message) and the first
// non-runtime function on the crashing thread's stack.
func loopKey(ev *bpf.Event, bin *probes.Binary) (key string, kind report.Kind) {
	fn := probeName(ev.Probe)
	if ev.Probe == bpf.ProbeMapsFatal {
		fn = "runtime.fatal" // as fillMessage classifies it
	}
	kind = report.Classify(bpf.Message(ev), fn)
	site := ""
	if bin != nil {
		var bias uint64
		if bin.PIE {
			bias, _ = procmem.LoadBias(int(ev.Pid), bin.Entry)
		}
		for _, pc := range bpf.StackPCs(ev) {
			if pc < bias+1 {
				continue
			}
			if fn := bin.FuncName(pc - 1 - bias); fn != "" && !isRuntimeFunc(fn) {
				site = fn
				break
			}
		}
		return fmt.Sprintf("%d:%d/%s/%s", bin.Key.Dev, bin.Key.Ino, kind, site), kind
	}
	return fmt.Sprintf("cookie:%d/%s/%s", ev.Cookie>>32, kind, site), kind
}

// LoopSummaries keep the counts of crashes the loop budget did not
// capture in full (daemon/publish.Publisher, into the store).
type LoopSummaries interface {
	AddSuppressed(l store.LoopSummary, pid int, at time.Time) error
}

// runSuppressed releases a crash the loop budget does not capture in
// full, and counts it: no stage runs, nothing but a summary is stored.
// Nothing seized it: the verdict lets threads waiting in the probe run
// on, and a SIGSTOP the probe sent is undone.
func (c *Capturer) runSuppressed(s *session) {
	log := s.log
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(s.pid) + "/exe"); err == nil {
		s.exe = strings.TrimSuffix(exe, " (deleted)")
	}
	if err := c.k.Release(uint32(s.pid), s.start); err != nil {
		log.Error("mark released", "err", err)
	}
	if st, ok, _ := c.k.StopOf(uint32(s.pid), s.start); ok && st.Flags&bpf.StopFlagSigstopSent != 0 {
		id := procmem.Identity{PID: s.pid, StartTime: startTicks(s.start)}
		if err := id.Resume(); err != nil && !errors.Is(err, procmem.ErrGone) {
			c.stats.resumeErr.Add(1)
			log.Error("resume", "err", err)
		}
	}
	c.mu.Lock()
	if w, ok := c.exits[s.pid]; ok && w.start == s.start {
		delete(c.exits, s.pid)
	}
	c.mu.Unlock()
	c.stats.suppressed.Add(1)
	sig, title, example := c.loops.last(s.loopKey)
	l := store.LoopSummary{Key: s.loopKey, Interval: s.loopInterval, Signature: sig, Title: title, ExampleID: example,
		Kind: s.loopKind, Exe: s.exe}
	if s.bin != nil {
		l.GoVersion, l.BuildID = s.bin.GoVersion, s.bin.BuildID
	}
	if l.Signature == "" {
		// No full capture of this loop in this daemon's memory (it
		// restarted mid-loop): the summary stands on its own key.
		l.Signature = "loop-" + strings.ReplaceAll(s.loopKey, "/", "-")
	}
	if c.Loops != nil {
		if err := c.Loops.AddSuppressed(l, s.pid, time.Now()); err != nil {
			log.Warn("count suppressed crash in the store", "err", err)
		}
	}
	log.Debug("crash loop: released without capture", "loop", s.loopKey)
	if c.OnSuppressed != nil {
		c.OnSuppressed(l)
	}
}

// budget decides, at a process's first fatal event, whether its crash
// gets a full capture (c.mu held).
func (c *Capturer) budget(s *session, ev *bpf.Event) {
	if c.loops == nil {
		return
	}
	bin, _ := c.bins.Binary(uint32(ev.Cookie >> 32))
	s.bin = bin
	if bin != nil {
		s.exe = bin.Path
	}
	s.loopKey, s.loopKind = loopKey(ev, bin)
	full, start := c.loops.admit(s.loopKey, time.Now())
	s.loopInterval, s.suppressed = start, !full
}
