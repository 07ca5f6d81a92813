// Package client is the typed client of the daemon's socket API, used by
// the CLI and by tests. It knows the API's paths; the types it sends and
// receives are package apitype's (and report.Crash), the very ones the
// daemon's handlers encode, so the two cannot drift. It imports nothing
// that links BPF: a program that only talks to the daemon does not carry
// cilium/ebpf (TestClientLinksNoBPF).
package client

import (
	"bytes"
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

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/apitype/live"
	"github.com/mapsentry/mapsentry/report"
)

// Errors the daemon's status codes map to, for callers to branch on.
var (
	// ErrNotFound: an unknown crash id, process or binary (404).
	ErrNotFound = errors.New("not found")
	// ErrNotRunning: no daemon listens on the socket.
	ErrNotRunning = errors.New("daemon not running")
	// ErrForbidden: the daemon refuses the caller (peer credentials: not
	// root, not in the group the route needs; 403).
	ErrForbidden = errors.New("forbidden")
	// ErrConflict: the process is already held, by a crash capture or by
	// another live decode or dump (409).
	ErrConflict = errors.New("process busy")
)

// maxAnswer bounds an answer: a dump of a process with very many
// goroutines is the largest.
const maxAnswer = 1 << 30

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

// do sends one request (in, when not nil, as its JSON body) and decodes a
// 200 answer into out (when not nil). Other answers become errors that
// wrap the Err* for their status code and carry the daemon's message.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://mapsentry"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("daemon not running: nothing listens on %s (start it: mapsentry daemon, or systemctl start mapsentry; another socket: --socket or MAPSENTRY_SOCKET): %w", c.socket, ErrNotRunning)
		}
		return fmt.Errorf("daemon at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent:
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode %s answer: %w", path, err)
		}
		return nil
	}
	var e apitype.Error
	_ = json.Unmarshal(data, &e)
	switch resp.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("%s: %w", e.Error, ErrNotFound)
	case http.StatusForbidden:
		return fmt.Errorf("%s: %w", e.Error, ErrForbidden)
	case http.StatusConflict:
		return fmt.Errorf("%s: %w", e.Error, ErrConflict)
	}
	return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*apitype.Status, error) {
	var s apitype.Status
	return &s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// PS lists watched Go binaries and their processes.
func (c *Client) PS(ctx context.Context) ([]apitype.Binary, error) {
	var b []apitype.Binary
	return b, c.do(ctx, http.MethodGet, "/v1/ps", nil, &b)
}

// Groups lists the crash groups (one per signature), most recent first.
func (c *Client) Groups(ctx context.Context) ([]report.Group, error) {
	var out []report.Group
	return out, c.do(ctx, http.MethodGet, "/v1/crashes/groups", nil, &out)
}

// Crashes lists up to limit crashes, newest first.
func (c *Client) Crashes(ctx context.Context, limit int) ([]report.Crash, error) {
	var cs []report.Crash
	return cs, c.do(ctx, http.MethodGet, "/v1/crashes?limit="+strconv.Itoa(limit), nil, &cs)
}

// Crash returns one crash report.
func (c *Client) Crash(ctx context.Context, id string) (*report.Crash, error) {
	var cr report.Crash
	return &cr, c.do(ctx, http.MethodGet, "/v1/crashes/"+url.PathEscape(id), nil, &cr)
}

// DeleteCrash deletes one crash report. It is a write operation: root or
// api.write_group only.
func (c *Client) DeleteCrash(ctx context.Context, id string) error {
	if err := c.do(ctx, http.MethodDelete, "/v1/crashes/"+url.PathEscape(id), nil, nil); err != nil {
		return fmt.Errorf("delete crash %s: %w", id, err)
	}
	return nil
}

// Decode asks the daemon to stop pid, decode the map at req.Addr and
// resume it. A write operation: root or api.write_group only.
func (c *Client) Decode(ctx context.Context, req apitype.DecodeRequest) (*live.DecodeResult, error) {
	var res live.DecodeResult
	return &res, c.do(ctx, http.MethodPost, "/v1/decode", req, &res)
}

// Dump asks the daemon to stop pid, read every goroutine and resume it.
// A write operation: root or api.write_group only.
func (c *Client) Dump(ctx context.Context, req apitype.DumpRequest) (*live.DumpResult, error) {
	var res live.DumpResult
	return &res, c.do(ctx, http.MethodPost, "/v1/dump", req, &res)
}

// Arm arms map-op probes (a write operation: root or api.write_group).
func (c *Client) Arm(ctx context.Context, req apitype.ArmRequest) (*apitype.ArmStatus, error) {
	var st apitype.ArmStatus
	return &st, c.do(ctx, http.MethodPost, "/v1/mapops/arm", req, &st)
}

// Disarm removes an arm request and its probes (a write operation).
func (c *Client) Disarm(ctx context.Context, req apitype.ArmRequest) (*apitype.Disarmed, error) {
	var d apitype.Disarmed
	return &d, c.do(ctx, http.MethodPost, "/v1/mapops/disarm", req, &d)
}

// MapOps returns the flight recorder's state.
func (c *Client) MapOps(ctx context.Context) (*apitype.MapOpsState, error) {
	var st apitype.MapOpsState
	return &st, c.do(ctx, http.MethodGet, "/v1/mapops", nil, &st)
}
