// Package corefile owns writing a compact ELF core of a frozen Linux/amd64
// process: its writable memory (the Go heap, goroutine stacks, the
// binary's data and bss) and every thread's registers, in the layout the
// kernel uses, so that `dlv core BINARY CORE` and gdb open it. Read-only
// file mappings (text, rodata, pclntab) are left out: debuggers read them
// from the executable. The file is size-capped and sparse: zero pages are
// holes, not bytes on disk.
package corefile

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors callers branch on.
var (
	// ErrTooLarge: the writable memory exceeds Options.MaxBytes; the core
	// was written with the mappings that fit and Result.Truncated set.
	ErrTooLarge = errors.New("core size cap reached")
)

// Thread is one thread's registers for an NT_PRSTATUS note.
type Thread struct {
	TID  int
	Regs unix.PtraceRegs
}

// Options bound a core.
type Options struct {
	// MaxBytes caps the memory bytes copied (default 256 MiB). Mappings
	// are taken in address order until the cap; stacks and data first
	// would be nicer, but address order keeps the binary's data (lowest)
	// and is deterministic.
	MaxBytes int64
	// MaxMappings caps the PT_LOAD segments (default 4096).
	MaxMappings int
}

// Result says what was written.
type Result struct {
	Path      string `json:"path"`
	Segments  int    `json:"segments"`
	Threads   int    `json:"threads"`
	Copied    int64  `json:"copied_bytes"`  // memory bytes read from the process
	OnDisk    int64  `json:"on_disk_bytes"` // non-zero bytes written (the rest are holes)
	Truncated bool   `json:"truncated,omitempty"`
	Skipped   int    `json:"skipped_mappings,omitempty"`
}

// MemReader reads the target's memory by address (procmem.Reader).
type MemReader interface {
	ReadAt(p []byte, addr uint64) (int, error)
}

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string
	Offset     uint64
	Path       string
}

// ReadMaps parses /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return nil, fmt.Errorf("read maps of %d: %w", pid, err)
	}
	defer f.Close()
	var out []Mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(out) < 1<<16 {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		a, b, ok := strings.Cut(fs[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(a, 16, 64)
		end, err2 := strconv.ParseUint(b, 16, 64)
		off, err3 := strconv.ParseUint(fs[2], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil || end <= start {
			continue
		}
		m := Mapping{Start: start, End: end, Perms: fs[1], Offset: off}
		if len(fs) >= 6 {
			m.Path = fs[5]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// worthSaving: readable and writable memory, not the kernel's vsyscall
// page; [vvar] cannot be read through /proc/PID/mem.
func worthSaving(m Mapping) bool {
	if len(m.Perms) < 2 || m.Perms[0] != 'r' || m.Perms[1] != 'w' {
		return false
	}
	return m.Path != "[vvar]" && m.Path != "[vsyscall]" && m.Path != "[vvar_vclock]"
}

const pageSize = 4096

// Snapshot is a core copied into memory while the process is held, to be
// written once it is released: a disk (slow, full, read-only) must never
// extend a freeze. It holds at most Options.MaxBytes of memory.
type Snapshot struct {
	pid   int
	segs  []Mapping
	data  [][]byte // per segment; nil: unreadable (a hole)
	notes []byte
	res   Result
}

// Copy reads the core of the held process pid into memory: its writable
// mappings through mem, its threads' registers (from threadregs or the
// tracer; the crashing thread first: debuggers take the first
// NT_PRSTATUS as the current thread) and its auxv.
func Copy(pid int, mem MemReader, threads []Thread, opt Options) (*Snapshot, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = 256 << 20
	}
	if opt.MaxMappings <= 0 {
		opt.MaxMappings = 4096
	}
	if len(threads) == 0 {
		return nil, errors.New("copy core: no threads")
	}
	maps, err := ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{pid: pid}
	var total int64
	for _, m := range maps {
		if !worthSaving(m) {
			continue
		}
		size := int64(m.End - m.Start)
		if len(s.segs) >= opt.MaxMappings || total+size > opt.MaxBytes {
			s.res.Truncated = true
			s.res.Skipped++
			continue
		}
		s.segs = append(s.segs, m)
		total += size
	}
	s.notes = buildNotes(pid, threads)
	s.res.Threads = len(threads)
	for _, seg := range s.segs {
		buf := make([]byte, seg.End-seg.Start)
		if _, err := mem.ReadAt(buf, seg.Start); err != nil {
			s.data = append(s.data, copyChunks(mem, buf, seg.Start, &s.res))
			continue
		}
		s.res.Copied += int64(len(buf))
		s.data = append(s.data, buf)
	}
	return s, nil
}

// copyChunks reads a segment that could not be read whole, 1 MiB at a
// time: unreadable ranges (guard pages, races with munmap) stay zeros, as
// the kernel writes them.
func copyChunks(mem MemReader, buf []byte, start uint64, res *Result) []byte {
	for off := 0; off < len(buf); off += 1 << 20 {
		chunk := buf[off:min(off+1<<20, len(buf))]
		if _, err := mem.ReadAt(chunk, start+uint64(off)); err != nil {
			clear(chunk)
			continue
		}
		res.Copied += int64(len(chunk))
	}
	return buf
}

// Write writes the core of pid to path: Copy, then WriteTo.
func Write(path string, pid int, mem MemReader, threads []Thread, opt Options) (Result, error) {
	s, err := Copy(pid, mem, threads, opt)
	if err != nil {
		return Result{Path: path}, err
	}
	return s.WriteTo(path)
}

// WriteTo writes the snapshot as a sparse ELF core at path.
func (s *Snapshot) WriteTo(path string) (Result, error) {
	res := s.res
	res.Path = path
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return res, fmt.Errorf("create core %s: %w", path, err)
	}
	defer f.Close()
	phnum := 1 + len(s.segs)
	noteOff := int64(64 + 56*phnum)
	dataOff := alignUp(noteOff+int64(len(s.notes)), pageSize)
	var hdr bytes.Buffer
	writeEhdr(&hdr, phnum)
	writePhdr(&hdr, elf.PT_NOTE, 0, uint64(noteOff), 0, uint64(len(s.notes)), uint64(len(s.notes)), 4)
	off := dataOff
	for _, seg := range s.segs {
		flags := elf.PF_R | elf.PF_W
		if strings.Contains(seg.Perms, "x") {
			flags |= elf.PF_X
		}
		size := seg.End - seg.Start
		writePhdr(&hdr, elf.PT_LOAD, flags, uint64(off), seg.Start, size, size, pageSize)
		off += int64(size)
	}
	if _, err := f.WriteAt(hdr.Bytes(), 0); err != nil {
		return res, fmt.Errorf("write core header: %w", err)
	}
	if _, err := f.WriteAt(s.notes, noteOff); err != nil {
		return res, fmt.Errorf("write core notes: %w", err)
	}
	res.OnDisk = int64(hdr.Len() + len(s.notes))
	off = dataOff
	for i, seg := range s.segs {
		w, err := writeSparse(f, s.data[i], off)
		if err != nil {
			return res, fmt.Errorf("write core segment at %#x: %w", seg.Start, err)
		}
		res.OnDisk += w
		off += int64(seg.End - seg.Start)
	}
	// Extend to the full length so the last segment's trailing holes exist.
	if err := f.Truncate(off); err != nil {
		return res, fmt.Errorf("size core: %w", err)
	}
	res.Segments = len(s.segs)
	if err := f.Close(); err != nil {
		return res, fmt.Errorf("close core: %w", err)
	}
	if res.Truncated {
		return res, fmt.Errorf("core of pid %d: %d mappings left out: %w", s.pid, res.Skipped, ErrTooLarge)
	}
	return res, nil
}

// writeSparse writes only the non-zero pages of p at off.
func writeSparse(f *os.File, p []byte, off int64) (int64, error) {
	var written int64
	for i := 0; i < len(p); i += pageSize {
		end := min(i+pageSize, len(p))
		pg := p[i:end]
		if allZero(pg) {
			continue
		}
		if _, err := f.WriteAt(pg, off+int64(i)); err != nil {
			return written, err
		}
		written += int64(len(pg))
	}
	return written, nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func alignUp(v, a int64) int64 { return (v + a - 1) &^ (a - 1) }

func writeEhdr(w io.Writer, phnum int) {
	var h [64]byte
	copy(h[:], elf.ELFMAG)
	h[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	h[elf.EI_OSABI] = byte(elf.ELFOSABI_NONE)
	le := binary.LittleEndian
	le.PutUint16(h[16:], uint16(elf.ET_CORE))
	le.PutUint16(h[18:], uint16(elf.EM_X86_64))
	le.PutUint32(h[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(h[32:], 64) // e_phoff
	le.PutUint16(h[52:], 64) // e_ehsize
	le.PutUint16(h[54:], 56) // e_phentsize
	le.PutUint16(h[56:], uint16(phnum))
	w.Write(h[:])
}

func writePhdr(w io.Writer, typ elf.ProgType, flags elf.ProgFlag, off, vaddr, filesz, memsz, align uint64) {
	var p [56]byte
	le := binary.LittleEndian
	le.PutUint32(p[0:], uint32(typ))
	le.PutUint32(p[4:], uint32(flags))
	le.PutUint64(p[8:], off)
	le.PutUint64(p[16:], vaddr)
	le.PutUint64(p[32:], filesz)
	le.PutUint64(p[40:], memsz)
	le.PutUint64(p[48:], align)
	w.Write(p[:])
}

// buildNotes makes NT_PRPSINFO, one NT_PRSTATUS per thread and NT_AUXV,
// laid out as the kernel's elf_core_dump does for x86-64.
func buildNotes(pid int, threads []Thread) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	// elf_prpsinfo (136 bytes).
	var ps [136]byte
	ps[0] = 3 // state: stopped
	ps[1] = 'T'
	le.PutUint32(ps[32:], uint32(pid))
	if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil {
		copy(ps[40:56], bytes.TrimSpace(comm))
	}
	if cmd, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil {
		copy(ps[56:136], bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
	}
	addNote(&b, elf.NT_PRPSINFO, ps[:])
	for _, t := range threads {
		// elf_prstatus (336 bytes): siginfo, cursig, sigpend, sighold,
		// pid/ppid/pgrp/sid, four timevals, user_regs_struct at 112,
		// fpvalid at 328.
		var st [336]byte
		le.PutUint32(st[0:], uint32(unix.SIGSTOP))
		le.PutUint16(st[12:], uint16(unix.SIGSTOP))
		le.PutUint32(st[32:], uint32(t.TID))
		le.PutUint32(st[36:], uint32(pid))
		var regs bytes.Buffer
		binary.Write(&regs, le, &t.Regs)
		copy(st[112:112+216], regs.Bytes())
		addNote(&b, elf.NT_PRSTATUS, st[:])
	}
	if auxv, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/auxv"); err == nil && len(auxv) <= 4096 {
		addNote(&b, elf.NType(6), auxv) // NT_AUXV
	}
	return b.Bytes()
}

func addNote(b *bytes.Buffer, typ elf.NType, desc []byte) {
	name := []byte("CORE\x00")
	le := binary.LittleEndian
	var h [12]byte
	le.PutUint32(h[0:], uint32(len(name)))
	le.PutUint32(h[4:], uint32(len(desc)))
	le.PutUint32(h[8:], uint32(typ))
	b.Write(h[:])
	b.Write(name)
	pad(b)
	b.Write(desc)
	pad(b)
}

func pad(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}
