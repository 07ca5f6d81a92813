package probes

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

func TestParseCgroup(t *testing.T) {
	id := "4f0a9c3c1b2d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f"
	for _, tc := range []struct {
		in                      string
		path, unit, containerID string
	}{
		{"0::/system.slice/nginx.service\n", "/system.slice/nginx.service", "nginx.service", ""},
		{"0::/system.slice/docker-" + id + ".scope\n", "/system.slice/docker-" + id + ".scope", "", id},
		{"0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + id + ".scope\n", "/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + id + ".scope", "", id},
		{"0::/docker/" + id + "\n", "/docker/" + id, "", id},
		// A cgroup v1 host: the name=systemd hierarchy names the unit.
		{"12:pids:/system.slice/cron.service\n1:name=systemd:/system.slice/cron.service\n", "/system.slice/cron.service", "cron.service", ""},
		// Hybrid: "0::/" says nothing; the v1 hierarchy does.
		{"1:name=systemd:/user.slice/a.service\n0::/\n", "/user.slice/a.service", "a.service", ""},
		{"0::/user.slice/x-" + id[:63] + ".scope\n", "/user.slice/x-" + id[:63] + ".scope", "", ""},
	} {
		p, u, c := parseCgroup(tc.in)
		if p != tc.path || u != tc.unit || c != tc.containerID {
			t.Errorf("parseCgroup(%q) = %q %q %q, want %q %q %q", tc.in, p, u, c, tc.path, tc.unit, tc.containerID)
		}
	}
}

func TestInnerPID(t *testing.T) {
	for _, tc := range []struct {
		status string
		pid    int
		want   int
	}{
		{"Name:\tx\nNSpid:\t4242\t7\n", 4242, 7},
		{"Name:\tx\nNSpid:\t4242\n", 4242, 0},
		{"Name:\tx\nNSpid:\t4242\t99\t1\n", 4242, 1},
		{"Name:\tx\n", 4242, 0},
		{"NSpid:\tjunk\n", 1, 0},
	} {
		if got := innerPID(tc.status, tc.pid); got != tc.want {
			t.Errorf("innerPID(%q) = %d, want %d", tc.status, got, tc.want)
		}
	}
	// Ourselves: the daemon's namespace, so no inner PID.
	if c := ContainerOf("/proc", os.Getpid()); c.NSPID != 0 || c.Cgroup == "" {
		t.Errorf("ContainerOf(self) = %+v: want no inner PID and a cgroup", c)
	}
}

func TestParseMountinfo(t *testing.T) {
	in := "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n" +
		"37 35 0:52 / /tmp/x rw shared:2 - tmpfs tmpfs rw\n" +
		"garbage line\n" +
		"38 35 0:53 / /y rw - overlay overlay rw,lowerdir=/a\n"
	got := parseMountinfo(in)
	want := []mountEntry{{"98:0", "/mnt two", "ext3"}, {"0:52", "/tmp/x", "tmpfs"}, {"0:53", "/y", "overlay"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Scanning the host twice with nothing attached: kernel threads and
// processes already seen are remembered, nothing panics.
func TestScanTwice(t *testing.T) {
	m := NewManager(nil, Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.Scan()
	m.Scan()
	if st := m.Stats(); st.Scans != 2 || st.Queued == 0 {
		t.Fatalf("stats %+v: want 2 scans and this host's processes queued", st)
	}
}
