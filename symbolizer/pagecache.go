package symbolizer

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

const pageSize = 4096

// pageCache is a bounded read cache over an io.ReaderAt of known size, so a
// 100 MB .gopclntab is read a page at a time and at most maxPages pages stay
// in memory.
type pageCache struct {
	src      io.ReaderAt
	size     int64
	maxPages int

	mu    sync.Mutex
	pages map[int64][]byte
	fifo  []int64 // eviction order (oldest first), len <= maxPages
	next  int     // next fifo slot to evict once full
}

func newPageCache(src io.ReaderAt, size int64, maxPages int) *pageCache {
	if maxPages < 4 {
		maxPages = 4
	}
	return &pageCache{src: src, size: size, maxPages: maxPages, pages: make(map[int64][]byte)}
}

var errOutOfRange = errors.New("out of range")

// readAt fills p from offset off, all or nothing.
func (c *pageCache) readAt(p []byte, off int64) error {
	if off < 0 || int64(len(p)) > c.size || off > c.size-int64(len(p)) {
		return fmt.Errorf("read %d bytes at offset %#x of %#x: %w", len(p), off, c.size, errOutOfRange)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(p) > 0 {
		pg, err := c.page(off / pageSize)
		if err != nil {
			return err
		}
		n := copy(p, pg[off%pageSize:])
		if n == 0 {
			return fmt.Errorf("read at offset %#x: %w", off, io.ErrUnexpectedEOF)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (c *pageCache) page(idx int64) ([]byte, error) {
	if pg, ok := c.pages[idx]; ok {
		return pg, nil
	}
	start := idx * pageSize
	n := int64(pageSize)
	if start+n > c.size {
		n = c.size - start
	}
	var pg []byte
	if len(c.fifo) < c.maxPages {
		pg = make([]byte, n)
		c.fifo = append(c.fifo, idx)
	} else {
		old := c.fifo[c.next]
		pg = c.pages[old][:0]
		delete(c.pages, old)
		if cap(pg) < int(n) {
			pg = make([]byte, n)
		}
		pg = pg[:n]
		c.fifo[c.next] = idx
		c.next = (c.next + 1) % c.maxPages
	}
	if got, err := c.src.ReadAt(pg, start); got != len(pg) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		// Forget the slot we took: a failed page must not be served later.
		for i, v := range c.fifo {
			if v == idx {
				c.fifo[i] = -1
			}
		}
		return nil, fmt.Errorf("read page at %#x: %w", start, err)
	}
	c.pages[idx] = pg
	return pg, nil
}

// reset drops every cached page.
func (c *pageCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pages, c.fifo, c.next = make(map[int64][]byte), nil, 0
}
