package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mapsentry/mapsentry/report"
)

// The signature index: one small entry per stored crash under its
// signature (sig_index: "signature\x00id" -> indexEntry), and the reverse
// (crash_sig: id -> signature) to move or drop it when a report changes or
// goes. Groups are aggregated from the index without decoding reports.
// Crash-loop summaries (suppressed crashes) live in their own bucket
// (loops.go) and are added per signature.
var (
	bucketSigIndex = []byte("sig_index")
	bucketCrashSig = []byte("crash_sig")
)

type indexEntry struct {
	At        time.Time   `json:"at"`
	Kind      report.Kind `json:"kind"`
	Title     string      `json:"title"`
	Exe       string      `json:"exe"`
	GoVersion string      `json:"go_version,omitempty"`
	BuildID   string      `json:"build_id,omitempty"`
}

// index puts c under its signature, moving it if the signature changed.
func index(tx *bolt.Tx, c *report.Crash) error {
	idx, err := tx.CreateBucketIfNotExists(bucketSigIndex)
	if err != nil {
		return err
	}
	rev, err := tx.CreateBucketIfNotExists(bucketCrashSig)
	if err != nil {
		return err
	}
	sig := report.SignatureOf(c)
	if old := rev.Get([]byte(c.ID)); old != nil && string(old) != sig {
		if err := idx.Delete(indexKey(string(old), c.ID)); err != nil {
			return err
		}
	}
	e := indexEntry{At: c.CapturedAt, Kind: c.Fatal.Kind, Title: report.SignatureTitle(c),
		Exe: c.Process.Exe, GoVersion: c.Process.GoVersion, BuildID: c.Process.BuildID}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := idx.Put(indexKey(sig, c.ID), b); err != nil {
		return err
	}
	return rev.Put([]byte(c.ID), []byte(sig))
}

// indexJSON indexes a report given as its stored JSON.
func indexJSON(tx *bolt.Tx, id string, data []byte) error {
	var c report.Crash
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("index crash %s: decode: %w", id, err)
	}
	c.ID = id
	if err := index(tx, &c); err != nil {
		return fmt.Errorf("index crash %s: %w", id, err)
	}
	return nil
}

// unindex drops a crash from the index.
func unindex(tx *bolt.Tx, id []byte) error {
	rev := tx.Bucket(bucketCrashSig)
	if rev == nil {
		return nil
	}
	if sig := rev.Get(id); sig != nil {
		if idx := tx.Bucket(bucketSigIndex); idx != nil {
			if err := idx.Delete(indexKey(string(sig), string(id))); err != nil {
				return err
			}
		}
	}
	return rev.Delete(id)
}

func indexKey(sig, id string) []byte { return []byte(sig + "\x00" + id) }

// Groups returns the crash groups, most recently seen first: captured
// crashes from the signature index, plus crash-loop summaries.
func (s *Store) Groups() ([]report.Group, error) {
	t := newGroupTally()
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := t.addIndex(tx); err != nil {
			return err
		}
		return forEachLoop(tx, t.addLoop)
	})
	if err != nil {
		return nil, err
	}
	return t.ranked(), nil
}

// groupTally aggregates crash groups by signature. Per-binary counts are
// kept in maps beside the groups until ranked turns them into each
// group's sorted, capped binary list.
type groupTally struct {
	groups map[string]*report.Group
	bins   map[string]map[report.GroupBinary]int
}

func newGroupTally() *groupTally {
	return &groupTally{groups: map[string]*report.Group{}, bins: map[string]map[report.GroupBinary]int{}}
}

// group is the group of sig, created empty on first sight.
func (t *groupTally) group(sig string) *report.Group {
	g, ok := t.groups[sig]
	if !ok {
		g = &report.Group{Signature: sig}
		t.groups[sig] = g
		t.bins[sig] = map[report.GroupBinary]int{}
	}
	return g
}

// widenSeen stretches g's first and last seen times to include at.
func widenSeen(g *report.Group, at time.Time) {
	if g.FirstSeen.IsZero() || at.Before(g.FirstSeen) {
		g.FirstSeen = at
	}
	if at.After(g.LastSeen) {
		g.LastSeen = at
	}
}

// addIndex counts every stored crash from the signature index, which
// holds what a group needs, so no report is decoded.
func (t *groupTally) addIndex(tx *bolt.Tx) error {
	idx := tx.Bucket(bucketSigIndex)
	if idx == nil {
		return nil
	}
	return idx.ForEach(func(k, v []byte) error {
		var e indexEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decode index entry %q: %w", k, err)
		}
		sig, id := splitIndexKey(k)
		g := t.group(sig)
		g.Captured++
		g.Kind, g.Title = e.Kind, e.Title
		if id > g.ExampleID {
			g.ExampleID = id // ids are time-ordered: the newest
		}
		widenSeen(g, e.At)
		t.bins[sig][report.GroupBinary{Exe: e.Exe, GoVersion: e.GoVersion, BuildID: e.BuildID}]++
		return nil
	})
}

// addLoop adds a crash-loop summary's suppressed crashes to its
// signature's group. A group with no stored crash takes its kind and
// title from the summary.
func (t *groupTally) addLoop(l LoopSummary) {
	g := t.group(l.Signature)
	g.Suppressed += l.Suppressed
	if g.Kind == "" {
		g.Kind, g.Title = l.Kind, l.Title
	}
	widenSeen(g, l.First)
	widenSeen(g, l.Last)
	t.bins[l.Signature][report.GroupBinary{Exe: l.Exe, GoVersion: l.GoVersion, BuildID: l.BuildID}] += l.Suppressed
}

// ranked finishes the groups: totals, each group's binaries, and the
// groups most recently seen first (by signature on a tie, so that the
// order is stable).
func (t *groupTally) ranked() []report.Group {
	out := make([]report.Group, 0, len(t.groups))
	for sig, g := range t.groups {
		g.Count = g.Captured + g.Suppressed
		g.Binaries = topBinaries(t.bins[sig])
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastSeen.Equal(out[j].LastSeen) {
			return out[i].LastSeen.After(out[j].LastSeen)
		}
		return out[i].Signature < out[j].Signature
	})
	return out
}

// topBinaries lists the binaries of a group, most crashes first (then by
// path and build id), at most report.MaxGroupBinaries of them.
func topBinaries(counts map[report.GroupBinary]int) []report.GroupBinary {
	var bins []report.GroupBinary
	for b, n := range counts {
		b.Count = n
		bins = append(bins, b)
	}
	sort.Slice(bins, func(i, j int) bool {
		if bins[i].Count != bins[j].Count {
			return bins[i].Count > bins[j].Count
		}
		return bins[i].Exe+bins[i].BuildID < bins[j].Exe+bins[j].BuildID
	})
	if len(bins) > report.MaxGroupBinaries {
		bins = bins[:report.MaxGroupBinaries]
	}
	return bins
}

func splitIndexKey(k []byte) (sig, id string) {
	for i, b := range k {
		if b == 0 {
			return string(k[:i]), string(k[i+1:])
		}
	}
	return string(k), ""
}
