package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"slices"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mapsentry/mapsentry/internal/procmem"
)

// Access is what a route needs from its caller.
type Access int

const (
	// Read routes only show what the daemon knows: status, ps, crashes.
	Read Access = iota + 1
	// Write routes change state or read other processes' memory on
	// demand (delete a report; arm, decode, dump as they land).
	Write
)

func (a Access) String() string {
	if a == Write {
		return "write"
	}
	return "read"
}

// Peer is the caller on the other end of a connection, from the kernel
// (SO_PEERCRED, SO_PEERGROUPS), as it was when it connected.
type Peer struct {
	PID    int32
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups
}

// inGroup says whether gid is the peer's primary or a supplementary group.
func (p Peer) inGroup(gid uint32) bool {
	return p.GID == gid || slices.Contains(p.Groups, gid)
}

// Policy decides which peers may use which routes. Root may do
// everything; otherwise a group grants read, another (or the same) write.
// The zero Policy (Read/WriteGID nil) lets only root in.
type Policy struct {
	ReadGroup  string // for messages
	ReadGID    *uint32
	WriteGroup string
	WriteGID   *uint32
}

// ErrDenied is wrapped by every refusal.
var ErrDenied = errors.New("permission denied")

// Check returns nil if p may use a route needing a, or why not.
func (pol Policy) Check(p Peer, a Access) error {
	if p.UID == 0 {
		return nil
	}
	canWrite := pol.WriteGID != nil && p.inGroup(*pol.WriteGID)
	canRead := canWrite || (pol.ReadGID != nil && p.inGroup(*pol.ReadGID))
	switch {
	case a == Read && canRead, a == Write && canWrite:
		return nil
	case a == Read:
		return fmt.Errorf("%w: uid %d is neither root nor in the group %s", ErrDenied, p.UID, groupName(pol.ReadGroup, pol.ReadGID))
	case pol.WriteGID == nil:
		return fmt.Errorf("%w: a write operation needs root (api.write_group is not set); uid %d is not root", ErrDenied, p.UID)
	default:
		return fmt.Errorf("%w: a write operation needs root or the group %s (api.write_group); uid %d has neither",
			ErrDenied, groupName(pol.WriteGroup, pol.WriteGID), p.UID)
	}
}

func groupName(name string, gid *uint32) string {
	switch {
	case gid == nil && name == "":
		return "(none configured)"
	case gid == nil:
		return name + " (no such group)"
	case name == strconv.Itoa(int(*gid)):
		return "gid " + name
	}
	return fmt.Sprintf("%s (gid %d)", name, *gid)
}

// ResolveGroup turns a group name or numeric gid into a gid. A number
// needs no /etc/group entry. ok is false for "" and for a name that does
// not exist (the caller decides whether that is fatal).
func ResolveGroup(g string) (gid uint32, ok bool, err error) {
	if g == "" {
		return 0, false, nil
	}
	if n, err := strconv.ParseUint(g, 10, 32); err == nil {
		return uint32(n), true, nil
	}
	grp, err := user.LookupGroup(g)
	var unknown user.UnknownGroupError
	if errors.As(err, &unknown) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up group %s: %w", g, err)
	}
	n, err := strconv.ParseUint(grp.Gid, 10, 32)
	if err != nil {
		return 0, false, fmt.Errorf("group %s has gid %q: %w", g, grp.Gid, err)
	}
	return uint32(n), true, nil
}

// NewPolicy resolves the configured groups. A read group that does not
// exist leaves the socket to root (fail closed); so does a write group.
func NewPolicy(readGroup, writeGroup string) (Policy, error) {
	pol := Policy{ReadGroup: readGroup, WriteGroup: writeGroup}
	for _, g := range []struct {
		name string
		gid  **uint32
	}{{readGroup, &pol.ReadGID}, {writeGroup, &pol.WriteGID}} {
		gid, ok, err := ResolveGroup(g.name)
		if err != nil {
			return Policy{}, err
		}
		if ok {
			*g.gid = &gid
		}
	}
	return pol, nil
}

type peerKey struct{}

// peerError is the reason a connection has no known peer.
type peerError struct{ err error }

// connContext records the peer's credentials once per connection: they
// are the credentials the process had when it called connect(2).
func connContext(ctx context.Context, c net.Conn) context.Context {
	p, err := peerOf(c)
	if err != nil {
		return context.WithValue(ctx, peerKey{}, peerError{err})
	}
	return context.WithValue(ctx, peerKey{}, p)
}

func peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("not a unix connection: %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var p Peer
	var opErr error
	err = raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			opErr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p = Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
		p.Groups, opErr = peerGroups(int(fd))
	})
	if err == nil {
		err = opErr
	}
	return p, err
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13+), the supplementary groups
// of the peer at connect time. x/sys has no wrapper for it.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		n := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch errno {
		case 0:
			return buf[:n/4], nil
		case syscall.ERANGE:
			if int(n/4) <= len(buf) || n > 1<<20 {
				return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
			}
			buf = make([]uint32, n/4)
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
}

// samePIDNamespace refuses a caller of another PID namespace than the
// daemon's: a write route acts on processes by PID, and a PID the caller
// names (`mapsentry dump --pid`, `arm --pid`) is another process, or none,
// in the daemon's namespace — a host's CLI on a container daemon's socket,
// or a container's CLI on the host daemon's. SO_PEERCRED gives pid 0 for a
// caller the daemon cannot see at all.
func samePIDNamespace(p Peer) error {
	own, err := procmem.OwnPIDNamespace()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDenied, err)
	}
	var theirs uint64
	if p.PID > 0 {
		var st unix.Stat_t
		if err := unix.Stat("/proc/"+strconv.Itoa(int(p.PID))+"/ns/pid", &st); err != nil {
			return fmt.Errorf("%w: the caller's PID namespace: %v", ErrDenied, err)
		}
		theirs = st.Ino
	}
	if theirs != uint64(own) {
		return fmt.Errorf("%w: the caller runs in another PID namespace than the daemon (pid:[%d]): "+
			"PIDs mean other processes there; run the CLI in the daemon's namespace (e.g. inside its container)", ErrDenied, own)
	}
	return nil
}

// guard wraps h so only peers the policy admits for a reach it.
func (s *Server) guard(a Access, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		switch p := r.Context().Value(peerKey{}).(type) {
		case Peer:
			if err = s.policy.Check(p, a); err != nil {
				s.log.Warn("refused", "uid", p.UID, "gid", p.GID, "pid", p.PID, "route", r.Pattern, "access", a)
			} else if a == Write {
				err = samePIDNamespace(p)
			}
		case peerError:
			err = fmt.Errorf("%w: %v", ErrDenied, p.err)
		default:
			err = fmt.Errorf("%w: no peer credentials", ErrDenied)
		}
		if err != nil {
			writeError(w, http.StatusForbidden, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}
