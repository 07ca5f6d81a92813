//go:build linux

package bpf

import (
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// The exec program names a file as stat does (device, inode, mtime,
// ctime, size): an exec of a file put in the filter by its stat sends no
// event and is counted; after ForgetExe it is an event again.
func TestExecFilterMatchesStat(t *testing.T) {
	testenv.RequirePrivileged(t)
	k, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.AttachTracepoints(); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/bin/true", &st); err != nil {
		t.Fatal(err)
	}
	key := ExeKey{Dev: uint64(unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)), Ino: st.Ino,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(), Size: st.Size}
	known := func() uint64 {
		c, err := k.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c.ExecKnown
	}
	run := func() {
		if err := exec.Command("/bin/true").Run(); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.KnowExe(key); err != nil {
		t.Fatal(err)
	}
	n0 := known()
	run()
	if n := known() - n0; n != 1 {
		t.Fatalf("exec of a known /bin/true counted %d times as known, want 1 (key %+v)", n, key)
	}
	if err := k.ForgetExe(key); err != nil {
		t.Fatal(err)
	}
	run()
	if n := known() - n0; n != 1 {
		t.Fatalf("exec of a forgotten /bin/true counted as known")
	}
}
