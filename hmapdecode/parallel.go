package hmapdecode

import (
	"runtime"
	"sync"
	"time"
)

// Parallel walks. A large map's tables (Swiss) or bucket ranges (classic)
// are walked by several goroutines, each on a fork of the decoder with its
// own counters, anomalies and occupancy; the forks are joined in walk
// order, so the result is the one a single walk produces: the same
// counts, the same anomalies in the same order, the same per-code totals.
// A classic walk whose forks disagree (an overflow bucket reached from
// two ranges) or hit a limit is redone by one walk, which decides exactly
// where the limit falls; only the time budget is taken as it falls.

const (
	// maxWorkers bounds the goroutines of one decode.
	maxWorkers = 8
	// parallelUnits is the smallest walk (buckets or groups) split across
	// goroutines; each gets at least half of it.
	parallelUnits = 1 << 14
)

// workers is how many goroutines walk units buckets or groups.
func (d *decoder) workers(units uint64) int {
	if d.req.Keys {
		return 1 // entries are listed in walk order and cut at MaxEntries
	}
	if w := d.lim.Workers; w > 0 {
		return int(min(uint64(w), max(units, 1)))
	}
	if units < parallelUnits {
		return 1
	}
	return int(min(uint64(min(runtime.GOMAXPROCS(0), maxWorkers)), units/(parallelUnits/2)))
}

// fork returns a decoder for one part of a walk: the request, type and
// reader are shared; results and counters are its own.
func (d *decoder) fork() *decoder {
	f := &decoder{
		req: d.req, lim: d.lim, r: d.r, typ: d.typ,
		res:          &Result{Anomalies: []Anomaly{}},
		anomalyCount: map[string]int{},
		units:        d.units, unitsBase: d.units,
		occ: d.occ.fork(),
	}
	if d.res.Stats.ChainHist != nil {
		f.res.Stats.ChainHist = make([]int64, len(d.res.Stats.ChainHist))
	}
	return f
}

// join merges a fork's findings as if its walk had run here, after
// everything already joined.
func (d *decoder) join(f *decoder) {
	listed := map[string]int{}
	for _, a := range f.res.Anomalies {
		if _, ok := listed[a.Code]; !ok {
			listed[a.Code] = min(d.anomalyCount[a.Code], maxAnomaliesPerCode)
		}
		if listed[a.Code] < maxAnomaliesPerCode {
			d.res.Anomalies = append(d.res.Anomalies, a)
			listed[a.Code]++
		}
	}
	for c, n := range f.anomalyCount {
		d.anomalyCount[c] += n
	}
	s, fs := &d.res.Stats, &f.res.Stats
	s.EntriesFound += fs.EntriesFound
	s.Overflow += fs.Overflow
	s.Groups += fs.Groups
	s.Slots += fs.Slots
	s.Tombstones += fs.Tombstones
	for i := range s.OccupancyHist {
		s.OccupancyHist[i] += fs.OccupancyHist[i]
	}
	for i := range s.HashHist {
		s.HashHist[i] += fs.HashHist[i]
	}
	for i := range fs.ChainHist {
		if i < len(s.ChainHist) {
			s.ChainHist[i] += fs.ChainHist[i]
		}
	}
	s.MaxChain = max(s.MaxChain, fs.MaxChain)
	for i := range d.slots {
		d.slots[i] += f.slots[i]
	}
	d.occ.merge(&f.occ)
	d.units += f.units - f.unitsBase
	d.res.Truncated = d.res.Truncated || f.res.Truncated
	d.stop = d.stop || f.stop
}

// run calls part(k, forks[k]) for every fork on its own goroutine and
// waits. A panic in a part is raised again here, on the caller's
// goroutine, where the caller's recovery sees it.
func run(forks []*decoder, part func(k int, f *decoder)) {
	var wg sync.WaitGroup
	panics := make([]any, len(forks))
	for k := range forks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[k] = recover() }()
			part(k, forks[k])
		}()
	}
	wg.Wait()
	for _, p := range panics {
		if p != nil {
			panic(p)
		}
	}
}

// split cuts n weights into k contiguous parts of about equal total
// weight; it returns the k+1 bounds.
func split(weights []uint64, k int) []int {
	var total uint64
	for _, w := range weights {
		total += w
	}
	bounds := make([]int, 0, k+1)
	bounds = append(bounds, 0)
	var acc uint64
	for i, w := range weights {
		acc += w
		if len(bounds) < k && acc*uint64(k) >= total*uint64(len(bounds)) {
			bounds = append(bounds, i+1)
		}
	}
	for len(bounds) < k+1 {
		bounds = append(bounds, len(weights))
	}
	return bounds
}

// outOfTime reports whether the decode's time budget or ctx ended.
func (d *decoder) outOfTime() bool {
	return d.r.ctx.Err() != nil || time.Now().After(d.r.deadline)
}
