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

// Groups returns the crash groups, most recently seen first.
func (s *Store) Groups() ([]report.Group, error) {
	groups := map[string]*report.Group{}
	bins := map[string]map[report.GroupBinary]int{}
	get := func(sig string) *report.Group {
		g, ok := groups[sig]
		if !ok {
			g = &report.Group{Signature: sig}
			groups[sig] = g
			bins[sig] = map[report.GroupBinary]int{}
		}
		return g
	}
	seen := func(g *report.Group, at time.Time) {
		if g.FirstSeen.IsZero() || at.Before(g.FirstSeen) {
			g.FirstSeen = at
		}
		if at.After(g.LastSeen) {
			g.LastSeen = at
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if idx := tx.Bucket(bucketSigIndex); idx != nil {
			err := idx.ForEach(func(k, v []byte) error {
				var e indexEntry
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("decode index entry %q: %w", k, err)
				}
				sig, id := splitIndexKey(k)
				g := get(sig)
				g.Captured++
				g.Kind, g.Title = e.Kind, e.Title
				if id > g.ExampleID {
					g.ExampleID = id // ids are time-ordered: the newest
				}
				seen(g, e.At)
				bins[sig][report.GroupBinary{Exe: e.Exe, GoVersion: e.GoVersion, BuildID: e.BuildID}]++
				return nil
			})
			if err != nil {
				return err
			}
		}
		return forEachLoop(tx, func(l LoopSummary) {
			g := get(l.Signature)
			g.Suppressed += l.Suppressed
			if g.Kind == "" {
				g.Kind, g.Title = l.Kind, l.Title
			}
			seen(g, l.First)
			seen(g, l.Last)
			bins[l.Signature][report.GroupBinary{Exe: l.Exe, GoVersion: l.GoVersion, BuildID: l.BuildID}] += l.Suppressed
		})
	})
	if err != nil {
		return nil, err
	}
	out := make([]report.Group, 0, len(groups))
	for sig, g := range groups {
		g.Count = g.Captured + g.Suppressed
		for b, n := range bins[sig] {
			b.Count = n
			g.Binaries = append(g.Binaries, b)
		}
		sort.Slice(g.Binaries, func(i, j int) bool {
			if g.Binaries[i].Count != g.Binaries[j].Count {
				return g.Binaries[i].Count > g.Binaries[j].Count
			}
			return g.Binaries[i].Exe+g.Binaries[i].BuildID < g.Binaries[j].Exe+g.Binaries[j].BuildID
		})
		if len(g.Binaries) > report.MaxGroupBinaries {
			g.Binaries = g.Binaries[:report.MaxGroupBinaries]
		}
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastSeen.Equal(out[j].LastSeen) {
			return out[i].LastSeen.After(out[j].LastSeen)
		}
		return out[i].Signature < out[j].Signature
	})
	return out, nil
}

func splitIndexKey(k []byte) (sig, id string) {
	for i, b := range k {
		if b == 0 {
			return string(k[:i]), string(k[i+1:])
		}
	}
	return string(k), ""
}
