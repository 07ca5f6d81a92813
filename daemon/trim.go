package daemon

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/corefile"
)

// startupSettle bounds how long after the first scan trimAfterStart waits
// for the scan's binaries' DWARF (a few hundred milliseconds per large
// binary).
const startupSettle = 30 * time.Second

// trimAfterStart gives back, once the first scan is done, the memory that
// starting up needed and a running daemon does not:
//   - the heap pages of loading the BPF programs (the kernel's BTF parsed)
//     and of the first scan's inspections: the runtime would otherwise
//     keep them as room up to the start-up's peak heap — about half of an
//     idle daemon's anonymous memory;
//   - its mappings of its own binary's code and read-only data that
//     start-up touched (package initialisers, protobuf and BTF tables,
//     flag and config parsing), with the kernel's fault-around mapping
//     64 KiB around every page touched: ~19 MB resident, of which a
//     running daemon uses a few. The pages stay in the page cache; what
//     the daemon touches again is mapped again on its next access, from
//     memory. Only clean, read-only, file-backed mappings are dropped, so
//     nothing is lost.
//
// It runs once the first scan is done and the DWARF of the binaries it
// found is applied (at most startupSettle later). Measured in
// docs/hmapdecode.md (RSS) and docs/discovery.md.
func (d *Daemon) trimAfterStart(ctx context.Context) {
	// The first scan's binaries have their DWARF applied just after
	// their probes are in (walking a binary's DWARF leaves megabytes of
	// garbage): wait for that too, a bounded time.
	settle := time.Now().Add(startupSettle)
	for d.probes.Stats().Scans == 0 || (d.probes.Refining() > 0 && time.Now().Before(settle)) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	debug.FreeOSMemory()
	n, err := dropImagePages()
	if err != nil {
		d.log.Debug("drop start-up pages of the daemon's binary", "err", err)
		return
	}
	d.log.Debug("dropped start-up pages of the daemon's binary", "mappings", n)
}

// dropImagePages unmaps the resident pages of the read-only mappings of
// the running binary (code, read-only data: MADV_DONTNEED on a private
// file mapping that was never written drops the page-table entries only;
// the next access maps the page-cache page again). It returns how many
// mappings it dropped.
func dropImagePages() (int, error) {
	exe, err := os.Executable() // the path even after an upgrade replaced the file
	if err != nil {
		return 0, err
	}
	maps, err := corefile.ReadMaps(os.Getpid())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range maps {
		if m.Path != exe || (m.Perms != "r-xp" && m.Perms != "r--p") {
			continue
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(m.Start), uintptr(m.End-m.Start), unix.MADV_DONTNEED); e != 0 {
			return n, fmt.Errorf("madvise %#x-%#x: %w", m.Start, m.End, e)
		}
		n++
	}
	return n, nil
}
