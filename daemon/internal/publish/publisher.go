// Package publish owns the hand-over of finished crash reports from
// capture to the store. Capture calls Publish and Update, which never touch
// the disk: they put the report (encoded) or the update on a bounded
// in-memory queue and return. One writer moves them into the bbolt store;
// while the store is unavailable — it failed to open, a write failed (full
// disk, read-only file system, I/O error) — into a bounded spool directory
// (by default on the runtime directory's tmpfs), or, if that fails too,
// bounded memory. It retries the store with back-off and moves what it
// spooled or kept in memory into the store once it works again, a previous
// run's spool included. Every report is stored once: Put is idempotent by
// report id, and a report stored again, or updated, keeps what the other
// copy added (store.Merge). Every report or update dropped beyond the
// bounds is counted (Stats) and logged.
package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/internal/retry"
	"github.com/mapsentry/mapsentry/report"
)

// ErrUnavailable is returned by reads while the store is not open.
var ErrUnavailable = errors.New("store unavailable")

// Config configures a Publisher (the daemon's store.* keys).
type Config struct {
	// StateDir holds the bbolt store; Retain bounds its crashes.
	StateDir string
	Retain   int
	// QueueMax and QueueMaxBytes bound what memory holds: the queue of
	// reports and updates waiting for the writer, reports neither store
	// nor spool took, and updates waiting for the store.
	QueueMax      int
	QueueMaxBytes int64
	// SpoolDir takes reports while the store is unavailable, up to
	// SpoolMaxFiles reports and SpoolMaxBytes bytes.
	SpoolDir      string
	SpoolMaxFiles int
	SpoolMaxBytes int64
	// RetryInitial doubles up to RetryMax between store attempts.
	RetryInitial time.Duration
	RetryMax     time.Duration
}

// Store states in Stats.State.
const (
	StateOpening  = "opening"  // not opened yet
	StateOK       = "ok"       // reports go straight to the store
	StateDegraded = "degraded" // reports go to the spool (or memory); retrying
)

type opKind int

const (
	opPut opKind = iota
	opUpdate
)

type op struct {
	kind opKind
	id   string
	data []byte              // opPut: the encoded report
	fn   func(*report.Crash) // opUpdate
	// pid and what describe a dropped report in the log.
	pid  int
	what string
}

func (o *op) size() int64 { return int64(len(o.data)) }

// Publisher is the writer between capture and store. Make it with New,
// run Run once; Publish and Update may be called before, during and after.
type Publisher struct {
	cfg Config
	log *slog.Logger
	// OnStored, if set, is called after a report or an update reached the
	// store: the exporter looks at its queue then. Set it before Run; it
	// runs on the writer and must not block.
	OnStored func(id string)

	wake  chan struct{}
	spool *spool

	mu        sync.Mutex
	queue     []op
	mem       map[string][]byte // reports only memory holds
	deferred  []op              // updates waiting for the store
	held      int               // len(queue) + len(mem) + len(deferred)
	heldBytes int64
	closed    bool // Run returned: nothing is written any more
	st        *store.Store
	state     string
	stateErr  string
	since     time.Time

	backoff time.Duration // writer only
	retryAt time.Time     // writer only: next store attempt while not ok
	stats   counters
}

// New makes a Publisher. It touches no disk: Run opens the store.
func New(cfg Config, log *slog.Logger) *Publisher {
	return &Publisher{
		cfg: cfg, log: log.With("component", "publish"),
		wake:  make(chan struct{}, 1),
		spool: newSpool(cfg.SpoolDir, cfg.SpoolMaxFiles, cfg.SpoolMaxBytes),
		mem:   map[string][]byte{},
		state: StateOpening, since: time.Now(),
	}
}

// Publish hands over a finished report. It returns at once and never
// blocks on disk: c is encoded before it returns (c may change afterwards)
// and queued. Publishing an id again replaces the earlier content, keeping
// the exit status and late events an Update added meanwhile.
func (p *Publisher) Publish(c *report.Crash) {
	p.stats.published.Add(1)
	data, err := json.Marshal(c)
	if err != nil {
		p.stats.dropUnencodable.Add(1)
		p.log.Error("crash report dropped: it cannot be encoded", "crash", c.ID, "pid", c.Process.PID, "err", err)
		return
	}
	o := op{kind: opPut, id: c.ID, data: data, pid: c.Process.PID, what: string(c.Fatal.Kind)}
	if why := p.enqueue(o); why != "" {
		p.stats.dropQueueFull.Add(1)
		p.log.Error("crash report dropped: "+why, "crash", c.ID, "pid", c.Process.PID, "kind", c.Fatal.Kind,
			"bytes", len(data), "dropped_total", p.stats.dropQueueFull.Load())
	}
}

// Update applies fn to the report id wherever it is (store, spool,
// memory), in the order of Publish and Update calls. It returns at once;
// fn runs later on the writer's goroutine and must only change its
// argument.
func (p *Publisher) Update(id string, fn func(*report.Crash)) {
	p.stats.updates.Add(1)
	if why := p.enqueue(op{kind: opUpdate, id: id, fn: fn}); why != "" {
		p.stats.dropUpdates.Add(1)
		p.log.Error("crash report update dropped: "+why, "crash", id, "dropped_total", p.stats.dropUpdates.Load())
	}
}

// enqueue queues o, or says why not.
func (p *Publisher) enqueue(o op) (refused string) {
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return "the daemon is stopping"
	case p.held+1 > p.cfg.QueueMax || p.heldBytes+o.size() > p.cfg.QueueMaxBytes:
		p.mu.Unlock()
		return fmt.Sprintf("memory bounds reached (%d reports and updates, %d bytes held; store.queue_max, store.queue_max_bytes)",
			p.held, p.heldBytes)
	}
	p.queue = append(p.queue, o)
	p.held++
	p.heldBytes += o.size()
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return ""
}

// Run writes until ctx ends, then writes what is queued (to the store, or
// the spool) and closes the store. Cancel ctx only after the last Publish
// (the daemon: after every capture session has ended).
func (p *Publisher) Run(ctx context.Context) error {
	if err := p.spool.load(); err != nil {
		p.log.Warn("spool unavailable; reports the store cannot take are kept in memory", "dir", p.cfg.SpoolDir, "err", err)
	}
	// Opens the store and moves in what a previous run spooled.
	p.flush()
	for {
		var retry <-chan time.Time
		var t *time.Timer
		if p.pendingFlush() {
			// A deadline, not a fresh wait per loop: a steady stream of
			// reports must not keep pushing the retry out.
			t = time.NewTimer(max(0, time.Until(p.retryAt)))
			retry = t.C
		}
		select {
		case <-ctx.Done():
			p.shutdown()
			return nil
		case <-p.wake:
			p.drain()
		case <-retry:
			p.flush()
		}
		if t != nil {
			t.Stop()
		}
	}
}

// pendingFlush says the store needs another attempt.
func (p *Publisher) pendingFlush() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state != StateOK
}

// drain handles every queued op.
func (p *Publisher) drain() {
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.mu.Unlock()
			return
		}
		o := p.queue[0]
		p.queue[0] = op{}
		p.queue = p.queue[1:]
		p.held--
		p.heldBytes -= o.size()
		p.mu.Unlock()
		switch o.kind {
		case opPut:
			p.put(o)
		case opUpdate:
			p.update(o)
		}
	}
}

// store returns the open store and whether it is healthy.
func (p *Publisher) store() (*store.Store, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st, p.st != nil && p.state == StateOK
}

func (p *Publisher) put(o op) {
	data := o.data
	// The newest content wins; what only an older copy has is kept.
	if old, ok := p.memGet(o.id); ok {
		data = merged(old, data)
	}
	if old, err := p.spool.get(o.id); err == nil {
		data = merged(old, data)
	}
	if st, ok := p.store(); ok {
		if p.storePut(st, o.id, data) == nil {
			p.forgetPending(o.id)
			return
		}
	}
	p.park(o, data)
}

func merged(older, newer []byte) []byte {
	if m, err := store.MergeJSON(older, newer); err == nil {
		return m
	}
	return newer
}

// storePut writes one report; a failure degrades the store.
func (p *Publisher) storePut(st *store.Store, id string, data []byte) error {
	created, err := st.Put(id, data)
	if err != nil {
		p.degrade(err)
		return err
	}
	if created {
		p.stats.stored.Add(1)
	}
	p.notify(id)
	return nil
}

func (p *Publisher) notify(id string) {
	if p.OnStored != nil {
		p.OnStored(id)
	}
}

// park keeps a report the store did not take: spool, else memory, else
// it is dropped (counted and logged).
func (p *Publisher) park(o op, data []byte) {
	err := p.spool.put(o.id, data)
	if err == nil {
		p.stats.spoolWrites.Add(1)
		p.memDel(o.id)
		p.log.Info("crash report spooled until the store is available", "crash", o.id, "dir", p.cfg.SpoolDir)
		return
	}
	if p.memPut(o.id, data) {
		p.log.Warn("crash report kept in memory: neither store nor spool takes it", "crash", o.id, "spool_err", err)
		return
	}
	p.stats.dropMemoryFull.Add(1)
	p.log.Error("crash report dropped: store, spool and memory bounds all refuse it", "crash", o.id, "pid", o.pid,
		"kind", o.what, "bytes", len(data), "spool_err", err, "dropped_total", p.stats.dropMemoryFull.Load())
}

func (p *Publisher) memGet(id string) ([]byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.mem[id]
	return b, ok
}

// memPut keeps a report in memory within the bounds; replacing a report
// memory holds already is always allowed (it is one report).
func (p *Publisher) memPut(id string, data []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, had := p.mem[id]
	if !had && (p.held+1 > p.cfg.QueueMax || p.heldBytes+int64(len(data)) > p.cfg.QueueMaxBytes) {
		return false
	}
	if !had {
		p.held++
	}
	p.heldBytes += int64(len(data)) - int64(len(old))
	p.mem[id] = data
	return true
}

func (p *Publisher) memDel(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.mem[id]; ok {
		delete(p.mem, id)
		p.held--
		p.heldBytes -= int64(len(old))
	}
}

// forgetPending drops the spool's and memory's copies of a report now in
// the store.
func (p *Publisher) forgetPending(id string) {
	p.memDel(id)
	if err := p.spool.remove(id); err != nil {
		// Moved in again at the next start; Put is idempotent.
		p.log.Warn("remove spooled report after storing it", "crash", id, "err", err)
	}
}

func (p *Publisher) update(o op) {
	// A copy memory or the spool holds is the newest: update it, then
	// store it like a new Publish (or keep it where it was).
	data, ok := p.memGet(o.id)
	if !ok {
		if b, err := p.spool.get(o.id); err == nil {
			data, ok = b, true
		}
	}
	if ok {
		nd, err := apply(data, o.fn)
		if err != nil {
			p.corrupt(o.id, err)
			return
		}
		o.data = nd
		p.put(o)
		return
	}
	st, healthy := p.store()
	if healthy {
		err := st.UpdateCrash(o.id, o.fn)
		switch {
		case err == nil:
			p.notify(o.id)
			return
		case errors.Is(err, store.ErrNotFound):
			p.unknownUpdate(o.id)
			return
		}
		p.degrade(err)
	}
	if st != nil {
		// A store that cannot be written can often still be read (a
		// full or read-only disk): spool the whole updated report.
		c, err := st.Crash(o.id)
		switch {
		case err == nil:
			o.fn(c)
			if b, err := json.Marshal(c); err == nil {
				p.park(o, b)
				return
			}
		case errors.Is(err, store.ErrNotFound):
			p.unknownUpdate(o.id)
			return
		}
	}
	p.mu.Lock()
	room := p.held+1 <= p.cfg.QueueMax
	if room {
		p.deferred = append(p.deferred, o)
		p.held++
	}
	p.mu.Unlock()
	if !room {
		p.stats.dropUpdates.Add(1)
		p.log.Error("crash report update dropped: the store is unavailable and memory bounds are reached", "crash", o.id,
			"dropped_total", p.stats.dropUpdates.Load())
	}
}

func apply(data []byte, fn func(*report.Crash)) ([]byte, error) {
	var c report.Crash
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	fn(&c)
	return json.Marshal(&c)
}

func (p *Publisher) unknownUpdate(id string) {
	p.stats.dropUnknown.Add(1)
	p.log.Warn("update of a crash report that is nowhere (deleted, retired, or never stored)", "crash", id)
}

func (p *Publisher) corrupt(id string, err error) {
	p.spool.quarantine(id)
	p.stats.dropCorrupt.Add(1)
	p.log.Error("spooled crash report unreadable; kept aside as .bad", "crash", id, "dir", p.cfg.SpoolDir, "err", err)
}

// degrade records that the store failed; retries start.
func (p *Publisher) degrade(err error) {
	p.stats.storeErrors.Add(1)
	p.mu.Lock()
	was := p.state
	if p.state != StateDegraded {
		p.state, p.since = StateDegraded, time.Now()
	}
	p.stateErr = err.Error()
	p.mu.Unlock()
	p.backoff = retry.Backoff(p.backoff, p.cfg.RetryInitial, p.cfg.RetryMax)
	p.retryAt = time.Now().Add(p.backoff)
	if was != StateDegraded {
		p.log.Error("store unavailable: crash reports go to the spool until it works again", "err", err,
			"spool", p.cfg.SpoolDir, "retry_in", p.backoff.Round(time.Millisecond))
	} else {
		p.log.Debug("store still unavailable", "err", err, "retry_in", p.backoff.Round(time.Millisecond))
	}
}

// open opens the store if it is not open yet.
func (p *Publisher) open() (*store.Store, error) {
	if st, _ := p.store(); st != nil {
		return st, nil
	}
	st, err := store.Open(p.cfg.StateDir, p.cfg.Retain)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.st = st
	p.mu.Unlock()
	return st, nil
}

// flush opens the store if needed and moves into it what memory and the
// spool hold (oldest first), then the deferred updates. It stops at the
// first failure (the store is then degraded and retried later).
func (p *Publisher) flush() {
	st, err := p.open()
	if err != nil {
		p.degrade(err)
		return
	}
	moved := 0
	for _, id := range p.memIDs() {
		data, ok := p.memGet(id)
		if !ok {
			continue
		}
		if !p.moveIn(st, id, data) {
			return
		}
		moved++
	}
	for _, id := range p.spool.ids() {
		data, err := p.spool.get(id)
		if errors.Is(err, os.ErrNotExist) {
			p.spool.forget(id)
			continue
		}
		if err == nil && !json.Valid(data) {
			err = errors.New("not a JSON report")
		}
		if err != nil {
			p.corrupt(id, err)
			continue
		}
		if !p.moveIn(st, id, data) {
			return
		}
		moved++
	}
	for {
		p.mu.Lock()
		if len(p.deferred) == 0 {
			p.mu.Unlock()
			break
		}
		o := p.deferred[0]
		p.mu.Unlock()
		err := st.UpdateCrash(o.id, o.fn)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			p.degrade(err)
			return
		}
		p.mu.Lock()
		p.deferred = p.deferred[1:]
		p.held--
		p.mu.Unlock()
		if err != nil {
			p.unknownUpdate(o.id)
		} else {
			p.notify(o.id)
		}
	}
	p.mu.Lock()
	was := p.state
	p.state, p.stateErr, p.since = StateOK, "", time.Now()
	p.mu.Unlock()
	p.backoff = 0
	if was == StateDegraded || moved > 0 {
		p.log.Info("store available", "moved_in", moved, "dir", p.cfg.StateDir)
	}
}

// moveIn stores a report memory or the spool held and forgets that copy.
func (p *Publisher) moveIn(st *store.Store, id string, data []byte) bool {
	if p.storePut(st, id, data) != nil {
		return false
	}
	p.forgetPending(id)
	p.stats.movedIn.Add(1)
	return true
}

// memIDs lists what memory holds, oldest first (ids are time-ordered).
func (p *Publisher) memIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.mem))
}

// shutdown writes what is queued, tries the store once more if it is
// degraded, spools what memory still holds, and counts and logs whatever
// is lost after all that; then it closes the store.
func (p *Publisher) shutdown() {
	p.drain()
	if p.pendingFlush() {
		p.flush()
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.drain() // anything enqueued before closed was set
	for _, id := range p.memIDs() {
		data, _ := p.memGet(id)
		err := p.spool.put(id, data)
		if err == nil {
			p.stats.spoolWrites.Add(1)
			p.memDel(id)
			continue
		}
		p.stats.dropShutdown.Add(1)
		p.log.Error("crash report lost at shutdown: neither store nor spool takes it", "crash", id, "spool_err", err)
	}
	p.mu.Lock()
	lost := len(p.deferred)
	p.mu.Unlock()
	if lost > 0 {
		p.stats.dropUpdates.Add(uint64(lost))
		p.log.Error("crash report updates lost at shutdown: the store is unavailable", "updates", lost)
	}
	p.mu.Lock()
	st := p.st
	p.st = nil
	p.mu.Unlock()
	if st != nil {
		if err := st.Close(); err != nil {
			p.log.Warn("close store", "err", err)
		}
	}
}
