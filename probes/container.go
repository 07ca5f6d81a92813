package probes

import (
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
)

// Container is how a process sits in its container or service: what a
// report needs to name it the way the operator does.
type Container struct {
	// NSPID is the process's PID in its own (innermost) PID namespace, 0
	// when that is the daemon's namespace (the PIDs are then the same).
	NSPID int
	// Cgroup is the cgroup v2 path (or, on a cgroup v1 host, the
	// name=systemd hierarchy's).
	Cgroup string
	// Unit is the systemd service the cgroup belongs to ("x.service").
	Unit string
	// ID is a container id (64 hex digits) found in the cgroup path:
	// docker-ID.scope, cri-containerd-ID.scope, crio-ID.scope,
	// libpod-ID.scope, /docker/ID, /kubepods/.../ID.
	ID string
}

// maxProcFile bounds what is read of one /proc file.
const maxProcFile = 64 << 10

// ContainerOf reads the container view of process pid from procRoot
// ("/proc"). Missing pieces are left empty: a process that exited keeps
// what was read before.
func ContainerOf(procRoot string, pid int) Container {
	var c Container
	dir := procRoot + "/" + strconv.Itoa(pid)
	if b, err := readBounded(dir+"/status", maxProcFile); err == nil {
		c.NSPID = innerPID(string(b), pid)
	}
	if b, err := readBounded(dir+"/cgroup", maxProcFile); err == nil {
		c.Cgroup, c.Unit, c.ID = parseCgroup(string(b))
	}
	return c
}

// innerPID returns the last PID of the NSpid line of a status file (the
// innermost namespace's), or 0 when it equals pid or is absent.
func innerPID(status string, pid int) int {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, "NSpid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		n, err := strconv.Atoi(f[len(f)-1])
		if err != nil || n <= 0 || n == pid {
			return 0
		}
		return n
	}
	return 0
}

// parseCgroup reads /proc/PID/cgroup: the v2 path (the "0::" line; else
// the v1 name=systemd hierarchy), and the systemd unit and container id
// found in it.
func parseCgroup(s string) (path, unit, container string) {
	v1 := ""
	for _, line := range strings.Split(s, "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			path = p
		}
		if _, rest, ok := strings.Cut(line, ":name=systemd:"); ok {
			v1 = rest
		}
	}
	if path == "" || path == "/" && v1 != "" {
		path = v1
	}
	for _, part := range strings.Split(path, "/") {
		if strings.HasSuffix(part, ".service") {
			unit = part
		}
		if id := containerID(part); id != "" {
			container = id
		}
	}
	return path, unit, container
}

func containerID(part string) string {
	part = strings.TrimSuffix(part, ".scope")
	if i := strings.LastIndexAny(part, "-:"); i >= 0 {
		part = part[i+1:]
	}
	if len(part) != 64 {
		return ""
	}
	for _, r := range part {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return ""
		}
	}
	return part
}

// readBounded reads at most n bytes of a file.
func readBounded(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, n))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}
