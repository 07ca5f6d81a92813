//go:build linux

package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// ExecEvent is one record of the exec ring (mapsentry.h struct exec_event).
type ExecEvent = mapsentryExecEvent

// ExeKey is an executable as the kernel names it at exec: superblock
// device (kernel encoding), inode, and contents generation (mapsentry.h
// struct exe_key).
type ExeKey = mapsentryExeKey

// ExecCtl is the daemon's side of the exec filter (struct exec_ctl).
type ExecCtl = mapsentryExecCtl

// ExecEvent.Flags and ExecCtl.Flags, mirrored from mapsentry.h.
const (
	ExecKeyed = 1 // Exe is set
	ExecKnown = 2 // Exe is known: sent for its new mount namespace
	ExecGated = 4 // Exe is on a filesystem the exec gate covers

	ExecCtlGate = 1
)

// ExecEventSize is the size of one exec-ring record.
const ExecEventSize = int(unsafe.Sizeof(ExecEvent{}))

// ExecEvents opens a reader on the exec ring buffer. Close it to unblock
// Read.
func (k *Kernel) ExecEvents() (*ringbuf.Reader, error) {
	r, err := ringbuf.NewReader(k.maps.ExecEvents)
	if err != nil {
		return nil, fmt.Errorf("open exec ring buffer: %w", err)
	}
	return r, nil
}

// ParseExecEvent decodes one exec-ring record.
func ParseExecEvent(raw []byte) (ExecEvent, error) { return parseRecord[ExecEvent](raw, "exec") }

// Filename is the path the exec was called with, up to the first NUL.
func Filename(e *ExecEvent) string {
	b := e.Filename[:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// KnowExe tells the exec program that the daemon has settled the file k:
// its execs send no event until ForgetExe (or a rewrite, which changes
// the key).
func (k *Kernel) KnowExe(key ExeKey) error {
	if err := k.maps.KnownExes.Put(key, uint32(1)); err != nil {
		return fmt.Errorf("add known executable %d:%d: %w", key.Dev, key.Ino, err)
	}
	return nil
}

// ForgetExe makes execs of the file k send events again.
func (k *Kernel) ForgetExe(key ExeKey) error {
	return deleteKey(k.maps.KnownExes, key, "known executable")
}

// SetExecGate says whether the exec gate runs: then execs in mount
// namespaces not watched (WatchMountNS) are sent even for known files, and
// execs of new files on gated filesystems (GateDev) do not wake the
// reader.
func (k *Kernel) SetExecGate(on bool) error {
	var ctl ExecCtl
	if on {
		ctl.Flags = ExecCtlGate
	}
	if err := k.maps.Execctl.Put(uint32(0), ctl); err != nil {
		return fmt.Errorf("set exec gate flag: %w", err)
	}
	return nil
}

// WatchMountNS records (watched) or forgets the mount namespace with nsfs
// inode ino as one the exec gate watches.
func (k *Kernel) WatchMountNS(ino uint32, watched bool) error {
	if !watched {
		return deleteKey(k.maps.KnownMntns, ino, "mount namespace")
	}
	if err := k.maps.KnownMntns.Put(ino, uint32(1)); err != nil {
		return fmt.Errorf("add mount namespace %d: %w", ino, err)
	}
	return nil
}

// GateDev records (covered) or forgets the filesystem with device
// major:minor as one the exec gate covers.
func (k *Kernel) GateDev(major, minor uint32, covered bool) error {
	dev := major<<20 | minor
	if !covered {
		return deleteKey(k.maps.GatedDevs, dev, "gated filesystem")
	}
	if err := k.maps.GatedDevs.Put(dev, uint32(1)); err != nil {
		return fmt.Errorf("add gated filesystem %d:%d: %w", major, minor, err)
	}
	return nil
}

func deleteKey(m *ebpf.Map, key any, what string) error {
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s %v: %w", what, key, err)
	}
	return nil
}
