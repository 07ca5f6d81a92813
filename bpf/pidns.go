//go:build linux

package bpf

import (
	"fmt"

	"github.com/mapsentry/mapsentry/internal/procmem"
)

// InitPIDNamespace is the nsfs inode of the initial (host) PID namespace.
const InitPIDNamespace = procmem.InitPIDNamespace

// setPIDNamespace sets a program's pidns_ino before load: ino, or the
// caller's own PID namespace when ino is 0 — the one a daemon looks PIDs up
// in (pidns.h). It returns the inode set.
func setPIDNamespace(v interface{ Set(any) error }, ino uint32) (uint32, error) {
	if ino == 0 {
		var err error
		if ino, err = procmem.OwnPIDNamespace(); err != nil {
			return 0, err
		}
	}
	if err := v.Set(ino); err != nil {
		return 0, fmt.Errorf("set pidns_ino: %w", err)
	}
	return ino, nil
}
