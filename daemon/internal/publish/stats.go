package publish

import (
	"sync/atomic"

	"github.com/mapsentry/mapsentry/apitype"
)

type counters struct {
	published, updates, stored, spoolWrites, movedIn, storeErrors atomic.Uint64
	dropQueueFull, dropMemoryFull, dropShutdown, dropUnencodable  atomic.Uint64
	dropUpdates, dropUnknown, dropCorrupt                         atomic.Uint64
}

// Stats is the publisher's part of `mapsentry status` (key "store").
type Stats = apitype.StoreStats

// Dropped counts what was lost, by reason.
type Dropped = apitype.StoreDropped

// Stats returns the counters and depths.
func (p *Publisher) Stats() Stats {
	files, bytes := p.spool.usage()
	p.mu.Lock()
	st := Stats{
		State: p.state, Error: p.stateErr, Since: p.since,
		Queued: len(p.queue), Memory: len(p.mem), DeferredUpdates: len(p.deferred), HeldBytes: p.heldBytes,
	}
	p.mu.Unlock()
	c := &p.stats
	st.Spooled, st.SpoolBytes, st.SpoolDir = files, bytes, p.cfg.SpoolDir
	st.Published, st.Updates, st.Stored = c.published.Load(), c.updates.Load(), c.stored.Load()
	st.SpoolWrites, st.MovedIn, st.StoreErrors = c.spoolWrites.Load(), c.movedIn.Load(), c.storeErrors.Load()
	st.Dropped = Dropped{
		QueueFull: c.dropQueueFull.Load(), MemoryFull: c.dropMemoryFull.Load(), Shutdown: c.dropShutdown.Load(),
		Unencodable: c.dropUnencodable.Load(), Updates: c.dropUpdates.Load(), UnknownUpdates: c.dropUnknown.Load(),
		SpoolCorrupt: c.dropCorrupt.Load(),
	}
	return st
}
