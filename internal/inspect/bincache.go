package inspect

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/mapsentry/mapsentry/probes"
)

// Live operations on the same program inspect the same binary: reading
// its buildinfo, pclntab and DWARF costs ~100 ms and ~30 MB of garbage for
// a small binary (more under load), far more than the decode itself. The
// Inspector keeps the last few inspected binaries, keyed by the file's
// identity, and shares them between operations; a binary is closed when
// it is evicted and no operation uses it.

// binary returns the inspected binary at exe and its release: the one
// discovery already inspected when it lends it (Hooks.Binary), else one
// from the cache.
func (in *Inspector) binary(exe string) (*probes.Binary, func(), error) {
	if in.hooks.Binary != nil {
		if b, release, ok := in.hooks.Binary(exe); ok {
			return b, release, nil
		}
	}
	return in.bins.get(exe)
}

// maxCachedBinaries bounds the binaries kept.
const maxCachedBinaries = 4

// binKey identifies a binary file's contents: its inode, and size and
// modification time (a file rewritten in place keeps its inode).
type binKey struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

type cachedBin struct {
	b       *probes.Binary
	refs    int
	evicted bool
	last    uint64 // use counter, for eviction
}

// binCache is the Inspector's cache of inspected binaries.
type binCache struct {
	mu      sync.Mutex
	entries map[binKey]*cachedBin
	tick    uint64
	closed  bool
}

// get returns the inspected binary at path (a /proc/PID/exe link) and a
// release function the caller must call when done with it. A binary comes
// back even when Inspect also reported a problem with its crash probes
// (no fatal function, a failed prologue check): reading memory is fine.
func (c *binCache) get(path string) (*probes.Binary, func(), error) {
	key, kerr := fileKey(path)
	if kerr == nil {
		c.mu.Lock()
		if e, ok := c.entries[key]; ok && !c.closed {
			e.refs++
			c.tick++
			e.last = c.tick
			c.mu.Unlock()
			return e.b, func() { c.release(e) }, nil
		}
		c.mu.Unlock()
	}
	b, err := probes.Inspect(path)
	if b == nil || b.Layout == nil || b.Table == nil {
		b.Close()
		if err == nil {
			err = fmt.Errorf("inspect %s: no layout or symbol table", path)
		}
		return nil, nil, err
	}
	if kerr != nil || b.Key.Ino != key.ino || b.Key.Dev != key.dev {
		// Not cacheable (or replaced meanwhile): this operation's own.
		return b, func() { b.Close() }, nil
	}
	e := &cachedBin{b: b, refs: 1}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return b, func() { b.Close() }, nil
	}
	if c.entries == nil {
		c.entries = map[binKey]*cachedBin{}
	}
	if old, ok := c.entries[key]; ok {
		c.evict(key, old) // inspected twice at once: keep the newer
	}
	c.tick++
	e.last = c.tick
	c.entries[key] = e
	for len(c.entries) > maxCachedBinaries {
		var lk binKey
		var le *cachedBin
		for k, v := range c.entries {
			if le == nil || v.last < le.last {
				lk, le = k, v
			}
		}
		c.evict(lk, le)
	}
	return b, func() { c.release(e) }, nil
}

// evict drops an entry; its binary closes when its last user is done.
func (c *binCache) evict(k binKey, e *cachedBin) {
	delete(c.entries, k)
	e.evicted = true
	if e.refs == 0 {
		e.b.Close()
	}
}

func (c *binCache) release(e *cachedBin) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.evicted {
		e.b.Close()
	}
}

// close evicts everything (the Inspector is stopping).
func (c *binCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for k, e := range c.entries {
		c.evict(k, e)
	}
}

// fileKey stats the file path resolves to.
func fileKey(path string) (binKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return binKey{}, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return binKey{}, fmt.Errorf("stat %s: no inode", path)
	}
	return binKey{dev: uint64(sys.Dev), ino: sys.Ino, size: st.Size(), mtime: st.ModTime().UnixNano()}, nil
}
