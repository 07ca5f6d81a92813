package publish

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/report"
)

// fixture is a Publisher over its own state and spool directories.
type fixture struct {
	t     *testing.T
	cfg   Config
	p     *Publisher
	stop  context.CancelFunc
	done  chan struct{}
	log   *lockedWriter
	notes chan string
}

func newFixture(t *testing.T, edit func(*Config)) *fixture {
	t.Helper()
	base := t.TempDir()
	cfg := Config{
		StateDir: filepath.Join(base, "state"), Retain: 100,
		QueueMax: 64, QueueMaxBytes: 16 << 20,
		SpoolDir: filepath.Join(base, "spool"), SpoolMaxFiles: 100, SpoolMaxBytes: 16 << 20,
		RetryInitial: 10 * time.Millisecond, RetryMax: 40 * time.Millisecond,
	}
	os.MkdirAll(cfg.StateDir, 0o750)
	if edit != nil {
		edit(&cfg)
	}
	f := &fixture{t: t, cfg: cfg, log: &lockedWriter{b: &strings.Builder{}}, notes: make(chan string, 100)}
	f.p = New(cfg, slog.New(slog.NewTextHandler(f.log, nil)))
	f.p.OnStored = func(id string) {
		select { // OnStored must not block the writer
		case f.notes <- id:
		default:
		}
	}
	return f
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (f *fixture) run() {
	ctx, cancel := context.WithCancel(context.Background())
	f.stop, f.done = cancel, make(chan struct{})
	go func() { defer close(f.done); f.p.Run(ctx) }()
	f.t.Cleanup(f.shutdown)
}

// shutdown ends Run (once) and waits for it.
func (f *fixture) shutdown() {
	if f.stop == nil {
		return
	}
	f.stop()
	<-f.done
	f.stop = nil
}

func (f *fixture) logText() string {
	f.log.mu.Lock()
	defer f.log.mu.Unlock()
	return f.log.b.String()
}

func (f *fixture) waitFor(what string, cond func(Stats) bool) Stats {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := f.p.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s; stats %+v\nlog:\n%s", what, st, f.logText())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// breakStore puts a directory where the database file goes: Open fails.
func (f *fixture) breakStore() { os.Mkdir(filepath.Join(f.cfg.StateDir, "mapsentry.db"), 0o700) }
func (f *fixture) mendStore()  { os.Remove(filepath.Join(f.cfg.StateDir, "mapsentry.db")) }

// stored opens the store after Run ended and returns every report in it.
func (f *fixture) stored() []report.Crash {
	f.t.Helper()
	f.shutdown()
	s, err := store.Open(f.cfg.StateDir, f.cfg.Retain)
	if err != nil {
		f.t.Fatal(err)
	}
	defer s.Close()
	cs, err := s.Crashes(1000)
	if err != nil {
		f.t.Fatal(err)
	}
	return cs
}

func newCrash(pid int) *report.Crash {
	return &report.Crash{Schema: report.Schema, ID: report.NewID(time.Now()), CapturedAt: time.Now(),
		Process: report.Process{PID: pid}, Fatal: report.Fatal{Kind: report.KindMapConcurrentWrite}}
}

func exit2(c *report.Crash) { st := 2; c.Freeze.ExitStatus = &st }

func noDrops(t *testing.T, st Stats) {
	t.Helper()
	if st.Dropped != (Dropped{}) {
		t.Errorf("dropped %+v, want nothing", st.Dropped)
	}
}

// TestUnopenableStoreSpoolsThenMovesIn: with a store that does not open,
// a report and its later updates go to the spool; once the store opens
// they are moved in once, and the spool is empty.
func TestUnopenableStoreSpoolsThenMovesIn(t *testing.T) {
	f := newFixture(t, nil)
	f.breakStore()
	f.run()
	c := newCrash(100)
	f.p.Publish(c)
	c.Freeze.Resumed = true // changed after Publish: the copy is not
	f.waitFor("report spooled", func(s Stats) bool { return s.Spooled == 1 && s.State == StateDegraded })
	f.p.Publish(c) // the capture's second, final copy
	f.p.Update(c.ID, exit2)
	f.p.Update(c.ID, func(r *report.Crash) {
		r.Fatal.Events = append(r.Fatal.Events, report.Event{TID: 7, KTimeNS: 9, AfterRelease: true})
	})
	f.waitFor("updates applied", func(s Stats) bool { return s.Queued == 0 && s.SpoolWrites == 4 })
	// Readable while pending: the API lists spooled reports.
	got, err := f.p.Crash(c.ID)
	if err != nil || got.Freeze.ExitStatus == nil || !got.Freeze.Resumed || len(got.Fatal.Events) != 1 {
		t.Fatalf("pending report: %+v, %v", got, err)
	}
	if cs, err := f.p.Crashes(10); err != nil || len(cs) != 1 {
		t.Fatalf("Crashes while degraded: %d, %v", len(cs), err)
	}
	if _, err := f.p.CountCrashes(); err == nil {
		t.Error("CountCrashes with no store: no error")
	}

	f.mendStore()
	st := f.waitFor("store back, spool empty", func(s Stats) bool { return s.State == StateOK && s.Spooled == 0 })
	if st.Stored != 1 || st.MovedIn != 1 || st.Published != 2 || st.Updates != 2 || st.StoreErrors == 0 {
		t.Errorf("counters %+v", st)
	}
	noDrops(t, st)
	select {
	case id := <-f.notes:
		if id != c.ID {
			t.Errorf("OnStored(%s), want %s", id, c.ID)
		}
	case <-time.After(5 * time.Second):
		t.Error("OnStored not called when the report reached the store")
	}
	cs := f.stored()
	if len(cs) != 1 || cs[0].ID != c.ID || cs[0].Freeze.ExitStatus == nil || *cs[0].Freeze.ExitStatus != 2 ||
		!cs[0].Freeze.Resumed || len(cs[0].Fatal.Events) != 1 {
		t.Fatalf("stored %+v", cs)
	}
	if ents, _ := os.ReadDir(f.cfg.SpoolDir); len(ents) != 0 {
		t.Errorf("spool not emptied: %v", ents)
	}
}

// TestUnwritableSpoolKeepsMemory: store and spool both unusable: the
// report is held in memory (bounded), and stored once the store opens.
func TestUnwritableSpoolKeepsMemory(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SpoolDir = filepath.Join(c.StateDir, "file") })
	os.WriteFile(f.cfg.SpoolDir, []byte("not a directory"), 0o600)
	f.breakStore()
	f.run()
	c := newCrash(101)
	f.p.Publish(c)
	f.p.Update(c.ID, exit2)
	f.waitFor("report in memory", func(s Stats) bool { return s.Memory == 1 && s.Queued == 0 })
	f.mendStore()
	st := f.waitFor("stored", func(s Stats) bool { return s.State == StateOK && s.Memory == 0 })
	if st.Stored != 1 || st.MovedIn != 1 || st.HeldBytes != 0 {
		t.Errorf("counters %+v", st)
	}
	noDrops(t, st)
	if cs := f.stored(); len(cs) != 1 || cs[0].Freeze.ExitStatus == nil {
		t.Fatalf("stored %+v", cs)
	}
}

// TestBoundsDropAndCount: beyond the memory and spool bounds reports are
// dropped, each counted by reason and logged with its id; nothing beyond
// the bounds is kept.
func TestBoundsDropAndCount(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.QueueMax, c.SpoolMaxFiles = 2, 1 })
	f.breakStore()
	a, b, c := newCrash(1), newCrash(2), newCrash(3)
	// Before Run: the queue alone holds them.
	f.p.Publish(a)
	f.p.Publish(b)
	f.p.Publish(c)
	if st := f.p.Stats(); st.Dropped.QueueFull != 1 || st.Queued != 2 {
		t.Fatalf("after 3 publishes into a queue of 2: %+v", st)
	}
	if !strings.Contains(f.logText(), c.ID) {
		t.Errorf("the drop of %s is not logged:\n%s", c.ID, f.logText())
	}
	f.run()
	// One fits the spool (1 file), one memory.
	st := f.waitFor("spool and memory used", func(s Stats) bool { return s.Spooled == 1 && s.Memory == 1 })
	d := newCrash(4)
	f.p.Publish(d) // the spool is full; memory has room for one more
	st = f.waitFor("queue drained", func(s Stats) bool { return s.Queued == 0 && s.Published == 4 })
	e := newCrash(5)
	f.p.Publish(e) // the queue has no room now
	st = f.p.Stats()
	if st.Memory != 2 || st.Dropped.QueueFull != 2 || st.Dropped.QueueFull+st.Dropped.MemoryFull != 2 {
		t.Fatalf("at the bounds: %+v", st)
	}
	f.p.Update(a.ID, exit2)
	if st := f.p.Stats(); st.Dropped.Updates != 1 {
		t.Fatalf("update beyond the bounds not counted: %+v", st.Dropped)
	}
	f.mendStore()
	f.waitFor("stored", func(s Stats) bool { return s.State == StateOK && s.Memory == 0 && s.Spooled == 0 })
	var ids []string
	for _, c := range f.stored() {
		ids = append(ids, c.ID)
	}
	if len(ids) != 3 || strings.Contains(strings.Join(ids, " "), c.ID) || strings.Contains(strings.Join(ids, " "), e.ID) {
		t.Fatalf("stored %v; want a, b, d (c and e were dropped)", ids)
	}
}

// TestSpoolByteBound: a report larger than the spool's byte bound is kept
// in memory instead.
func TestSpoolByteBound(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SpoolMaxBytes = 200 })
	f.breakStore()
	f.run()
	big := newCrash(6)
	big.PartnersNote = strings.Repeat("x", 300)
	f.p.Publish(big)
	st := f.waitFor("report in memory", func(s Stats) bool { return s.Memory == 1 })
	if st.Spooled != 0 || st.SpoolBytes != 0 {
		t.Fatalf("spool over its byte bound: %+v", st)
	}
}

// TestPreviousSpoolMovedInOnce: a spool left by a previous run is moved
// in at start — including a report the store already has (a daemon that
// died between the commit and removing the spool file): still one report,
// not exported twice.
func TestPreviousSpoolMovedInOnce(t *testing.T) {
	f := newFixture(t, nil)
	s, err := store.Open(f.cfg.StateDir, 100)
	if err != nil {
		t.Fatal(err)
	}
	already, fresh := newCrash(10), newCrash(11)
	if err := s.PutCrash(already); err != nil {
		t.Fatal(err)
	}
	s.ExportQueue().Ack(t.Context(), already.ID)
	s.Close()
	os.MkdirAll(f.cfg.SpoolDir, 0o700)
	for _, c := range []*report.Crash{already, fresh} {
		b, _ := json.Marshal(c)
		os.WriteFile(filepath.Join(f.cfg.SpoolDir, c.ID+".json"), b, 0o600)
	}
	os.WriteFile(filepath.Join(f.cfg.SpoolDir, "0123abcd.json"), []byte("{truncated"), 0o600)
	os.WriteFile(filepath.Join(f.cfg.SpoolDir, ".x.tmp"), []byte("{"), 0o600)
	f.run()
	st := f.waitFor("spool moved in", func(s Stats) bool { return s.State == StateOK && s.Spooled == 0 })
	if st.Stored != 1 || st.MovedIn != 2 || st.Dropped.SpoolCorrupt != 1 {
		t.Errorf("counters %+v", st)
	}
	if _, err := os.Stat(filepath.Join(f.cfg.SpoolDir, "0123abcd.json.bad")); err != nil {
		t.Errorf("unreadable spool file not set aside: %v", err)
	}
	f.shutdown()
	s, _ = store.Open(f.cfg.StateDir, 100)
	defer s.Close()
	if n, _ := s.CountCrashes(); n != 2 {
		t.Fatalf("%d crashes stored, want 2", n)
	}
	p, _ := s.ExportQueue().Pending(t.Context(), 10)
	n, _ := s.ExportQueue().Len(t.Context())
	if n != 1 || len(p) > 1 || (len(p) == 1 && p[0].ID != fresh.ID) {
		t.Fatalf("export queue: %d pending, want only the fresh one", n)
	}
}

// TestShutdownSpoolsOrCountsLoss: at shutdown, what only memory holds
// goes to the spool if it can; if not, it is counted lost.
func TestShutdownSpoolsOrCountsLoss(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SpoolMaxFiles = 0 })
	f.breakStore()
	f.run()
	f.p.Publish(newCrash(20))
	f.waitFor("report in memory", func(s Stats) bool { return s.Memory == 1 })
	f.shutdown()
	if st := f.p.Stats(); st.Dropped.Shutdown != 1 {
		t.Fatalf("loss at shutdown not counted: %+v", st.Dropped)
	}
	f.p.Publish(newCrash(21)) // after Run: refused, counted
	if st := f.p.Stats(); st.Dropped.QueueFull != 1 {
		t.Fatalf("publish after shutdown not counted: %+v", st.Dropped)
	}
}

// TestUpdatesReachStoredReports: an update of a report in a healthy
// store is applied there; one of a report that is nowhere is counted.
func TestUpdatesReachStoredReports(t *testing.T) {
	f := newFixture(t, nil)
	f.run()
	c := newCrash(30)
	f.p.Publish(c)
	f.p.Update(c.ID, exit2)
	f.p.Update("0000000000000000deadbeef", exit2)
	st := f.waitFor("updates done", func(s Stats) bool { return s.Queued == 0 && s.Dropped.UnknownUpdates == 1 })
	if st.Stored != 1 || st.SpoolWrites != 0 {
		t.Errorf("counters %+v", st)
	}
	got, err := f.p.Crash(c.ID)
	if err != nil || got.Freeze.ExitStatus == nil {
		t.Fatalf("%+v, %v", got, err)
	}
	if err := f.p.DeleteCrash(c.ID); err != nil {
		t.Fatal(err)
	}
	if cs := f.stored(); len(cs) != 0 {
		t.Fatalf("deleted report still stored")
	}
}

// TestRetryNotPostponedByAStream: reports arriving faster than the retry
// interval (a crash loop) do not keep postponing the store's retry.
func TestRetryNotPostponedByAStream(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.RetryInitial, c.RetryMax = 200*time.Millisecond, 200*time.Millisecond
		c.QueueMax, c.SpoolMaxFiles = 1<<20, 1<<20
	})
	f.breakStore()
	f.run()
	f.p.Publish(newCrash(50))
	f.waitFor("degraded", func(s Stats) bool { return s.State == StateDegraded && s.Spooled == 1 })
	f.mendStore()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		f.p.Publish(newCrash(51)) // a report every 5 ms for 3 s
		time.Sleep(5 * time.Millisecond)
		if f.p.Stats().State == StateOK {
			return
		}
	}
	t.Fatalf("the store was not retried during a stream of reports (retry every 200ms): %+v", f.p.Stats())
}
