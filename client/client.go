// Package client is the typed client of the daemon's socket API, used by
// the CLI and by tests. It knows the API's paths and types, nothing of the
// daemon's internals.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

// ErrNotFound is returned for an unknown crash id.
var ErrNotFound = errors.New("not found")

// ErrNotRunning is returned when no daemon listens on the socket.
var ErrNotRunning = errors.New("daemon not running")

// Client talks to one daemon.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client for the daemon listening on socket.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Status is the daemon's health and counters.
type Status struct {
	Version   string          `json:"version"`
	PID       int             `json:"pid"`
	StartedAt time.Time       `json:"started_at"`
	Socket    string          `json:"socket"`
	StateDir  string          `json:"state_dir"`
	Freeze    bool            `json:"freeze_enabled"`
	Crashes   int             `json:"crashes_stored"`
	Discovery json.RawMessage `json:"discovery"`
	Capture   json.RawMessage `json:"capture"`
	Kernel    json.RawMessage `json:"kernel"`
	Events    json.RawMessage `json:"events"`
	// StraysResumed counts processes found stopped at a crash probe with
	// no frozen record when the daemon started, and resumed.
	StraysResumed int     `json:"strays_resumed"`
	Checks        []Check `json:"checks,omitempty"`
}

// Check is one of the daemon's start-up checks of a capability or kernel
// feature (daemon.Check).
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Fatal  bool   `json:"fatal,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Binary is one watched Go binary (see probes.BinaryStatus).
type Binary struct {
	ID        uint32   `json:"id"`
	Path      string   `json:"path"`
	Dev       uint64   `json:"dev"`
	Ino       uint64   `json:"ino"`
	GoVersion string   `json:"go_version"`
	MapLayout string   `json:"map_layout"`
	Stripped  bool     `json:"stripped"`
	HasDWARF  bool     `json:"has_dwarf"`
	PIDs      []int    `json:"pids"`
	Probes    []string `json:"probes"`
	Error     string   `json:"error,omitempty"`
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://mapsentry"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("daemon not running: nothing listens on %s (start it: mapsentry daemon, or systemctl start mapsentry; another socket: --socket or MAPSENTRY_SOCKET): %w", c.socket, ErrNotRunning)
		}
		return fmt.Errorf("daemon at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%s: %w", e.Error, ErrNotFound)
		}
		return fmt.Errorf("%s: %s: %s", path, resp.Status, e.Error)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.get(ctx, "/v1/status", &s)
}

// PS lists watched Go binaries and their processes.
func (c *Client) PS(ctx context.Context) ([]Binary, error) {
	var b []Binary
	return b, c.get(ctx, "/v1/ps", &b)
}

// Crashes lists up to limit crashes, newest first.
func (c *Client) Crashes(ctx context.Context, limit int) ([]report.Crash, error) {
	var cs []report.Crash
	return cs, c.get(ctx, "/v1/crashes?limit="+strconv.Itoa(limit), &cs)
}

// Crash returns one crash report.
func (c *Client) Crash(ctx context.Context, id string) (*report.Crash, error) {
	var cr report.Crash
	return &cr, c.get(ctx, "/v1/crashes/"+url.PathEscape(id), &cr)
}
