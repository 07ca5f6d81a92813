package publish

import (
	"errors"
	"time"

	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/report"
)

// maxPendingGrouped bounds the reports not yet in the store folded into
// the groups.
const maxPendingGrouped = 1000

// Groups returns the crash groups (store.Store.Groups) with the reports
// only the spool or memory hold folded in; while the store is
// unavailable, those alone.
func (p *Publisher) Groups() ([]report.Group, error) {
	var gs []report.Group
	st, healthy := p.store()
	if st != nil {
		var err error
		if gs, err = st.Groups(); err != nil && healthy {
			return nil, err
		}
	}
	idx := map[string]int{}
	for i, g := range gs {
		idx[g.Signature] = i
	}
	for _, c := range p.pending(maxPendingGrouped) {
		sig := report.SignatureOf(&c)
		i, ok := idx[sig]
		if !ok {
			gs = append(gs, report.Group{Signature: sig, Title: report.SignatureTitle(&c), Kind: c.Fatal.Kind, FirstSeen: c.CapturedAt})
			i = len(gs) - 1
			idx[sig] = i
		}
		g := &gs[i]
		g.Captured++
		g.Count++
		if c.CapturedAt.After(g.LastSeen) {
			g.LastSeen = c.CapturedAt
		}
		if c.CapturedAt.Before(g.FirstSeen) {
			g.FirstSeen = c.CapturedAt
		}
		if c.ID > g.ExampleID {
			g.ExampleID = c.ID
		}
	}
	return gs, nil
}

// ErrStoreUnavailable: the store is not open or not healthy.
var ErrStoreUnavailable = errors.New("store unavailable")

// AddSuppressed counts a crash the crash-loop budget did not capture in
// full (store.Store.AddSuppressed). It needs the store: while it is
// unavailable the count is lost and the error says so (the metric still
// counts it).
func (p *Publisher) AddSuppressed(l store.LoopSummary, pid int, at time.Time) error {
	st, healthy := p.store()
	if st == nil || !healthy {
		return ErrStoreUnavailable
	}
	return st.AddSuppressed(l, pid, at)
}
