package daemon

import (
	"fmt"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// Scope is which processes the daemon can watch at all, whatever
// discovery.include says: those of its PID namespace and the namespaces
// below it. On the host that is every process; in a container without the
// host's PID namespace (systemd-nspawn, `unshare -p`) only the container's.
// The BPF side reports PIDs as that namespace numbers them and ignores
// every process outside it (bpf/pidns.h).
type Scope = apitype.Scope

func scopeOf(pidns uint32) Scope {
	s := Scope{PIDNamespace: pidns, Host: pidns == procmem.InitPIDNamespace}
	if s.Host {
		s.Description = "every process on the host (initial PID namespace)"
	} else {
		s.Description = fmt.Sprintf("only processes of PID namespace pid:[%d] and those below it: the daemon runs in a "+
			"child PID namespace (a container); Go programs of the host and of other containers are neither watched "+
			"nor held, even when they run a watched binary (counted as kernel.other_namespace_hits)", pidns)
	}
	return s
}
