package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// notifier speaks systemd's notify protocol (sd_notify(3)): one datagram
// of newline-separated KEY=VALUE per message, to the unix datagram socket
// named by NOTIFY_SOCKET ("@" prefix: abstract namespace). Without
// NOTIFY_SOCKET every call is a no-op, so the daemon runs the same under
// systemd, in a terminal and in tests.
type notifier struct {
	conn *net.UnixConn
}

// newNotifier connects to $NOTIFY_SOCKET if set.
func newNotifier() (*notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &notifier{}, nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	} else if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path or @abstract name", path)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("connect to NOTIFY_SOCKET: %w", err)
	}
	return &notifier{conn: conn}, nil
}

// Active reports whether there is a service manager to notify
// (NOTIFY_SOCKET was set).
func (n *notifier) Active() bool { return n.conn != nil }

// Send sends one notification, e.g. "READY=1\nSTATUS=watching 3 binaries".
func (n *notifier) Send(state string) error {
	if n.conn == nil {
		return nil
	}
	if _, err := n.conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %q: %w", strings.SplitN(state, "\n", 2)[0], err)
	}
	return nil
}

// Close closes the socket.
func (n *notifier) Close() error {
	if n.conn == nil {
		return nil
	}
	return n.conn.Close()
}

// watchdogInterval is how often to send WATCHDOG=1: half of WATCHDOG_USEC,
// if systemd asked this process (WATCHDOG_PID unset or ours) for pings.
// Zero: no watchdog.
func watchdogInterval() (time.Duration, error) {
	us := os.Getenv("WATCHDOG_USEC")
	if us == "" {
		return 0, nil
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0, nil
	}
	n, err := strconv.ParseUint(us, 10, 64)
	if err != nil || n == 0 {
		return 0, errors.New("WATCHDOG_USEC=" + us + ": want a positive number of microseconds")
	}
	return time.Duration(n) * time.Microsecond / 2, nil
}
