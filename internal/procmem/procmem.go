// Package procmem owns reading another process's memory and thread state:
// a bounded ReaderAt over /proc/PID/mem that counts bytes and calls; the
// copy a held process is read into (Copy: many ranges per process_vm_readv,
// into a bounded buffer) and the Image of it that decoders read after the
// release, which fails — never answers zeros — outside what was copied;
// the thread-state helpers the freeze protocol needs; and process
// identity: (PID, start time), and the PID namespace the PID is numbered
// in (pidns.go). Everything read here is hostile input to its callers.
package procmem

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
)

// ErrBudget is returned once a Reader has read its byte budget.
var ErrBudget = errors.New("memory read budget exhausted")

// ErrUnmapped is returned by Copy.ReadMapped for an address in no readable
// mapping.
var ErrUnmapped = errors.New("in no readable mapping")

// Reader reads a process's memory by virtual address. It is safe for
// concurrent use.
type Reader struct {
	f      *os.File
	pid    int
	budget int64 // 0: unlimited
	bytes  atomic.Int64
	calls  atomic.Int64

	copyOnce sync.Once
	cp       *Copy
}

// Open opens /proc/PID/mem. budget bounds the total bytes read (0: none).
func Open(pid int, budget int64) (*Reader, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	if err != nil {
		return nil, fmt.Errorf("open memory of pid %d: %w", pid, err)
	}
	return &Reader{f: f, pid: pid, budget: budget}, nil
}

// ReadAt fills p from address addr. A short read is an error.
func (r *Reader) ReadAt(p []byte, addr uint64) (int, error) {
	if r.budget > 0 && r.bytes.Load()+int64(len(p)) > r.budget {
		return 0, fmt.Errorf("read %d bytes at %#x: %w", len(p), addr, ErrBudget)
	}
	if addr > 1<<63-1 {
		return 0, fmt.Errorf("read at %#x: address out of range", addr)
	}
	r.calls.Add(1)
	n, err := r.f.ReadAt(p, int64(addr))
	r.bytes.Add(int64(n))
	if err != nil {
		return n, fmt.Errorf("read %d bytes at %#x of pid %d: %w", len(p), addr, r.pid, err)
	}
	return n, nil
}

// Stats reports the bytes read and read calls made so far.
func (r *Reader) Stats() (bytes, calls int64) { return r.bytes.Load(), r.calls.Load() }

// Close closes the memory file.
func (r *Reader) Close() error { return r.f.Close() }
