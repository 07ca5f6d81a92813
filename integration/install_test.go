package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// makeInstall runs `make install` (or uninstall) into destdir with the
// test's binary, and extra make variables.
func makeInstall(t *testing.T, target, destdir string, vars ...string) {
	t.Helper()
	args := append([]string{"-s", "-C", "..", target, "DESTDIR=" + destdir, "NOBUILD=1", "BIN=" + shared.mapsentry}, vars...)
	if out, err := exec.Command("make", args...).CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args[3:], " "), err, out)
	}
}

// TestMakeInstall: `make install DESTDIR=` puts every file where the unit
// expects it, with its mode; a second install (an upgrade) replaces the
// binary by a new file and keeps the operator's config; uninstall removes
// what install put, except config. (On a booted systemd:
// integration/systemd_test.go.)
func TestMakeInstall(t *testing.T) {
	dest := t.TempDir()
	makeInstall(t, "install", dest)
	files := map[string]os.FileMode{
		"usr/local/bin/mapsentry":              0o755,
		"etc/systemd/system/mapsentry.service": 0o644,
		"usr/lib/sysusers.d/mapsentry.conf":    0o644,
		"usr/lib/tmpfiles.d/mapsentry.conf":    0o644,
		"etc/mapsentry/mapsentry.yaml":         0o644,
	}
	for f, mode := range files {
		st, err := os.Stat(filepath.Join(dest, f))
		if err != nil {
			t.Errorf("make install did not put %s: %v", f, err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", f, st.Mode().Perm(), mode)
		}
	}
	if st, err := os.Stat(filepath.Join(dest, "etc/mapsentry/conf.d")); err != nil || !st.IsDir() {
		t.Errorf("no /etc/mapsentry/conf.d: %v", err)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/mapsentry.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/mapsentry daemon", "ExecStopPost=/usr/local/bin/mapsentry resume-frozen"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("installed unit lacks %q", want)
		}
	}

	// Upgrade in place: the running daemon's file is left alone (install
	// writes a new inode), the operator's config is kept.
	bin := filepath.Join(dest, "usr/local/bin/mapsentry")
	before, _ := os.Stat(bin)
	cfg := filepath.Join(dest, "etc/mapsentry/mapsentry.yaml")
	if err := os.WriteFile(cfg, []byte("log_level: debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	makeInstall(t, "install", dest)
	after, _ := os.Stat(bin)
	if before.Sys().(*syscall.Stat_t).Ino == after.Sys().(*syscall.Stat_t).Ino {
		t.Errorf("upgrade rewrote the binary in place (inode %d): a running daemon's text would change under it",
			after.Sys().(*syscall.Stat_t).Ino)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "log_level: debug\n" {
		t.Errorf("upgrade overwrote the operator's config: %q", b)
	}

	makeInstall(t, "uninstall", dest)
	for f := range files {
		_, err := os.Stat(filepath.Join(dest, f))
		if f == "etc/mapsentry/mapsentry.yaml" {
			if err != nil {
				t.Errorf("uninstall removed the operator's config: %v", err)
			}
		} else if err == nil {
			t.Errorf("uninstall left %s", f)
		}
	}

	// Another prefix: the unit follows the binary.
	usr := t.TempDir()
	makeInstall(t, "install", usr, "PREFIX=/usr")
	unit, err = os.ReadFile(filepath.Join(usr, "etc/systemd/system/mapsentry.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/mapsentry daemon") || strings.Contains(string(unit), "/usr/local/bin") {
		t.Errorf("PREFIX=/usr: unit still names /usr/local/bin or not /usr/bin:\n%s", unit)
	}
}
