package procmem

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Buffer is memory for a large copy kept outside the Go heap: mapped and
// populated in one system call before the process is held, and unmapped
// when freed. Measured on the 2-vCPU VMs (Firecracker, free page
// reporting): a 69 MB make() on the heap took 7–300 ms, because heap
// pages used before and returned to the kernel are zeroed by the runtime
// one page fault at a time, and asking for huge pages (MADV_HUGEPAGE)
// sometimes stalled 100–140 ms in the kernel's compaction; an anonymous
// mapping populated with MADV_POPULATE_WRITE took 12–16 ms every time. Off
// the heap the buffer also needs no garbage collection before it is
// allocated and does not make the collector let garbage grow by its size
// (GOGC), and its pages go back to the kernel the moment it is freed.
//
// Nothing may use the bytes after Free: a copy's users copy what they
// keep (decode results, goroutine dumps).
type Buffer struct {
	mu  sync.Mutex
	mem []byte
}

// maxBuffer bounds one Buffer (a copy is bounded by capture.max_bytes
// long before this).
const maxBuffer = 1 << 36

// NewBuffer maps n bytes and populates their pages.
func NewBuffer(n uint64) (*Buffer, error) { return mapBuffer(n, true) }

// NewScratch maps n bytes without populating them: a page costs memory
// only once written, and all of it goes back to the kernel at Free.
func NewScratch(n uint64) (*Buffer, error) { return mapBuffer(n, false) }

func mapBuffer(n uint64, populate bool) (*Buffer, error) {
	if n == 0 || n > maxBuffer {
		return nil, fmt.Errorf("copy buffer of %d bytes: out of range", n)
	}
	mem, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("map a %d-byte copy buffer: %w", n, err)
	}
	if !populate {
		return &Buffer{mem: mem}, nil
	}
	if err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE); err != nil {
		// Before Linux 5.14: a write per page maps it.
		for i := 0; i < len(mem); i += unix.Getpagesize() {
			mem[i] = 0
		}
	}
	return &Buffer{mem: mem}, nil
}

// Bytes is the whole buffer; nil once freed.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mem
}

// Len is the buffer's size; 0 once freed.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.mem)
}

// ErrFreed: the buffer was freed already.
var ErrFreed = errors.New("copy buffer freed")

// Free unmaps the buffer. Later calls return ErrFreed.
func (b *Buffer) Free() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mem == nil {
		return ErrFreed
	}
	err := unix.Munmap(b.mem)
	b.mem = nil
	return err
}
