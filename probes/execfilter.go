package probes

import (
	"os"
	"strconv"
	"strings"

	"github.com/mapsentry/mapsentry/bpf"
)

// The exec filter: the BPF exec program sends no event for an exec of a
// file the daemon has settled (probed, not Go, out of scope), so a busy
// host's execs of known programs wake nobody. The kernel names a file by
// its superblock device, inode and contents generation (bpf.ExeKey); the
// daemon learns that name from an exec event of a file it has settled —
// the generation the event carries must equal the one the daemon's stat
// saw, so the name is the file's — and puts it in the BPF map. A file the
// daemon forgets (evicted, detached, rewritten, dropped from the rejected
// cache) has its names taken out of the map before anything else (settle),
// so its next exec is an event again; a rewrite changes the generation and
// so the name. The map is an LRU: an entry it drops costs one more event.
//
// What the daemon no longer learns from those execs: which process runs a
// probed binary (ps, GoProcesses, a binary's live processes). The /proc
// scan (discovery.rescan) finds them, and, before a binary is evicted at
// the cap, a sweep of /proc looks for untracked processes (makeRoom).

// ExecFilter is what the manager needs of the BPF exec filter; the
// Kernel given to NewManager may implement it.
type ExecFilter interface {
	KnowExe(bpf.ExeKey) error
	ForgetExe(bpf.ExeKey) error
	SetExecGate(on bool) error
	WatchMountNS(ino uint32, watched bool) error
	GateDev(major, minor uint32, covered bool) error
}

// maxExeNames bounds the kernel names kept for one file (the same inode
// reached through an overlay and directly can have two).
const maxExeNames = 4

// Exec is one exec event, as OnExec takes it.
type Exec struct {
	PID   int
	Flags uint32 // bpf.ExecKeyed, bpf.ExecKnown, bpf.ExecGated
	Exe   bpf.ExeKey
}

// filter is the kernel's exec filter, or nil.
func (m *Manager) filter() ExecFilter {
	f, _ := m.k.(ExecFilter)
	return f
}

// learnExe puts the kernel's name of the file s saw into the exec filter
// when the file is settled with the contents the event saw. Called after
// m.known(s) said so.
func (m *Manager) learnExe(s sighting, x Exec) {
	f := m.filter()
	if f == nil || x.Flags&bpf.ExecKeyed == 0 {
		return
	}
	if x.Exe.MtimeNs != s.gen.MtimeNS || x.Exe.CtimeNs != s.gen.CtimeNS || x.Exe.Size != s.gen.Size {
		return // not the file s saw (the process exec'd again), or rewritten
	}
	m.settledMu.Lock()
	defer m.settledMu.Unlock()
	if g, ok := m.settledKeys[s.key]; !ok || g != s.gen {
		return
	}
	names := m.exeNames[s.key]
	for _, n := range names {
		if n == x.Exe {
			return
		}
	}
	if len(names) >= maxExeNames {
		return
	}
	if err := f.KnowExe(x.Exe); err != nil {
		m.log.Debug("exec filter", "err", err)
		return
	}
	m.exeNames[s.key] = append(names, x.Exe)
}

// forgetExeNames takes key's names out of the exec filter. Called with
// m.settledMu held.
func (m *Manager) forgetExeNames(key FileKey) {
	names, ok := m.exeNames[key]
	if !ok {
		return
	}
	delete(m.exeNames, key)
	f := m.filter()
	if f == nil {
		return
	}
	for _, n := range names {
		if err := f.ForgetExe(n); err != nil {
			// Left in the map, its execs would send nothing while the
			// file gets no probes: the scan is all that would find them.
			m.log.Warn("exec filter: forget a file", "dev", key.Dev, "ino", key.Ino, "err", err)
		}
	}
}

// runs reports whether process pid still runs the file key (an exec of a
// known file sends no event: a process that exec'd something else is
// noticed here). Called with m.mu held.
func (m *Manager) runs(pid int, key FileKey) bool {
	st, err := os.Stat(m.cfg.ProcRoot + "/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return false
	}
	k, _, ok := fileIdentity(st)
	return ok && k == key
}

// parseDev parses a mountinfo device "major:minor".
func parseDev(s string) (major, minor uint32, ok bool) {
	a, b, found := strings.Cut(s, ":")
	if !found {
		return 0, 0, false
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	return uint32(ma), uint32(mi), err1 == nil && err2 == nil
}
