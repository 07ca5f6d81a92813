package symbolizer

import (
	"container/list"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/mapsentry/mapsentry/goruntime"
)

// Target is what dumping one binary's goroutines needs: its pclntab, the
// runtime layout of its Go version (DWARF applied when present) and the
// address of runtime.allgs. It reads only the binary; safe for concurrent
// use.
type Target struct {
	Table     *Table
	Layout    *goruntime.Layout
	Allgs     uint64
	GoVersion string
	Stripped  bool // no .symtab
	HasDWARF  bool
	PIE       bool // ET_DYN: process addresses are link addresses + LoadBias
	entry     uint64
}

// OpenTarget opens a Go binary (a path, or /proc/PID/exe).
func OpenTarget(path string) (*Target, error) {
	tab, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	tg, err := newTarget(path, tab)
	if err != nil {
		tab.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return tg, nil
}

func newTarget(path string, tab *Table) (*Target, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open ELF: %w", err)
	}
	defer f.Close()
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read buildinfo: %w", err)
	}
	var exp string
	for _, s := range bi.Settings {
		if s.Key == "GOEXPERIMENT" {
			exp = s.Value
		}
	}
	ver, err := goruntime.ParseVersion(bi.GoVersion, exp)
	if err != nil {
		return nil, err
	}
	arch := "amd64"
	if f.Machine == elf.EM_AARCH64 {
		arch = "arm64"
	}
	lay, err := goruntime.ForVersion(ver, arch)
	if err != nil {
		return nil, err
	}
	tg := &Target{Table: tab, Layout: lay, GoVersion: bi.GoVersion, PIE: f.Type == elf.ET_DYN, entry: f.Entry}
	if _, err := f.Symbols(); err != nil {
		tg.Stripped = true
	}
	if d, err := f.DWARF(); err == nil {
		if err := lay.ApplyDWARF(d); err == nil {
			tg.HasDWARF = true
		}
	}
	if tg.Allgs, err = FindAllgs(f, tab); err != nil {
		return nil, err
	}
	return tg, nil
}

// LoadBias returns where process pid loaded this binary minus its link
// address: AT_ENTRY from /proc/PID/auxv minus the ELF entry point. It is 0
// for ET_EXEC binaries (Go's default), non-zero for PIE under ASLR.
func (tg *Target) LoadBias(pid int) (uint64, error) {
	if !tg.PIE {
		return 0, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/auxv")
	if err != nil {
		return 0, fmt.Errorf("read auxv of %d: %w", pid, err)
	}
	for i := 0; i+16 <= len(b) && i < 4096; i += 16 {
		if binary.LittleEndian.Uint64(b[i:]) == 9 { // AT_ENTRY
			return binary.LittleEndian.Uint64(b[i+8:]) - tg.entry, nil
		}
	}
	return 0, fmt.Errorf("auxv of %d has no AT_ENTRY", pid)
}

// Close releases the binary.
func (tg *Target) Close() error { return tg.Table.Close() }

// Capture reads the goroutines of a frozen process running this binary.
func (tg *Target) Capture(mem MemReader, regs map[int]Registers, opt CaptureOptions) (*Snapshot, error) {
	if opt.Allgs == 0 {
		opt.Allgs = tg.Allgs
	}
	return Capture(mem, tg.Table, tg.Layout, regs, opt)
}

// FileKey identifies a binary on disk: uprobes, pclntabs and layouts are
// per (device, inode), not per path.
type FileKey struct {
	Dev, Ino uint64
}

// KeyOf stats path (e.g. /proc/PID/exe, which follows into the process's
// mount namespace).
func KeyOf(path string) (FileKey, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return FileKey{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return FileKey{Dev: uint64(st.Dev), Ino: st.Ino}, nil
}

// Cache keeps the most recently used Targets per (dev, ino), at most max
// of them (each holds an open file and at most 4 MiB of pclntab pages). An
// evicted target is closed once its last holder releases it; callers must
// not use a Target after calling its release function.
type Cache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // of *cacheEntry, most recent first
	items map[FileKey]*list.Element
}

type cacheEntry struct {
	key  FileKey
	tg   *Target
	refs int
	dead bool
}

// NewCache returns a cache of at most max targets (default 32).
func NewCache(max int) *Cache {
	if max <= 0 {
		max = 32
	}
	return &Cache{max: max, ll: list.New(), items: make(map[FileKey]*list.Element)}
}

// Get returns the target for path, opening it on a miss, and a release
// function the caller must call when done with it.
func (c *Cache) Get(path string) (*Target, func(), error) {
	key, err := KeyOf(path)
	if err != nil {
		return nil, func() {}, err
	}
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.ll.MoveToFront(el)
		e := el.Value.(*cacheEntry)
		e.refs++
		c.mu.Unlock()
		return e.tg, c.release(e), nil
	}
	c.mu.Unlock()
	tg, err := OpenTarget(path)
	if err != nil {
		return nil, func() {}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok { // opened concurrently
		tg.Close()
		e := el.Value.(*cacheEntry)
		e.refs++
		return e.tg, c.release(e), nil
	}
	e := &cacheEntry{key: key, tg: tg, refs: 1}
	c.items[key] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		old := c.ll.Back().Value.(*cacheEntry)
		c.ll.Remove(c.ll.Back())
		delete(c.items, old.key)
		old.dead = true
		if old.refs == 0 {
			old.tg.Close()
		}
	}
	return tg, c.release(e), nil
}

func (c *Cache) release(e *cacheEntry) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			e.refs--
			if e.refs == 0 && e.dead {
				e.tg.Close()
			}
		})
	}
}

// Len is the number of cached targets.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
