package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size bytes on dir (which must exist) until the
// end of t: a small disk a test can fill.
func Tmpfs(t testing.TB, dir string, size int) {
	t.Helper()
	RequirePrivileged(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)+",mode=0750"); err != nil {
		Unavailable(t, "mount a tmpfs on "+dir+": "+err.Error())
	}
	t.Cleanup(func() { unmount(t, dir) })
}

// Fill writes dir/filler until its file system is full (ENOSPC) and
// returns the file's path; removing it frees the space.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			return path
		}
	}
}

// ReadOnly makes dir read-only until the end of t or until the returned
// function is called: a read-only bind mount of dir on itself. Root
// ignores permission bits, so this is how a test shows root a read-only
// directory (writes fail with EROFS, as on a file system the kernel
// remounted read-only after errors).
func ReadOnly(t testing.TB, dir string) (writable func()) {
	t.Helper()
	RequirePrivileged(t)
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		Unavailable(t, "bind-mount "+dir+": "+err.Error())
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			unmount(t, dir)
		}
	})
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
	return func() {
		t.Helper()
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND, ""); err != nil {
			t.Fatalf("remount %s read-write: %v", dir, err)
		}
	}
}

func unmount(t testing.TB, dir string) {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		t.Errorf("unmount %s: %v", dir, err)
	}
}
