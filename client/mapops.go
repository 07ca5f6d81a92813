package client

import (
	"context"
	"time"
)

// ArmRequest names what to arm or disarm: an executable (every process
// running it) or one process; For is a duration ("10m"), empty: until
// disarmed.
type ArmRequest struct {
	Exe string `json:"exe,omitempty"`
	PID int    `json:"pid,omitempty"`
	For string `json:"for,omitempty"`
}

// MapOpRefusal is a map function that got no probe, and why.
type MapOpRefusal struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// ArmStatus is one arm request and what it got (probes.ArmStatus).
type ArmStatus struct {
	Scope   string         `json:"scope"`
	Path    string         `json:"path,omitempty"`
	PID     int            `json:"pid,omitempty"`
	Why     string         `json:"why"`
	Until   time.Time      `json:"until,omitempty"`
	Links   int            `json:"links"`
	Probes  []string       `json:"probes,omitempty"`
	Refused []MapOpRefusal `json:"refused,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// MapOpsState is the flight recorder's mode, arm requests and link counts
// (the daemon's and the kernel's).
type MapOpsState struct {
	Mode           string      `json:"mode"`
	OnCrashFor     string      `json:"on_crash_for"`
	Always         []string    `json:"always,omitempty"`
	Loaded         bool        `json:"loaded"`
	LoadError      string      `json:"load_error,omitempty"`
	ProgramIDs     []uint32    `json:"program_ids,omitempty"`
	Links          int         `json:"links"`
	KernelLinks    int         `json:"kernel_links"`
	KernelLinksErr string      `json:"kernel_links_error,omitempty"`
	Arms           []ArmStatus `json:"arms"`
}

// Disarmed is the answer to a disarm.
type Disarmed struct {
	Disarmed int `json:"disarmed"`
	Links    int `json:"links"` // map-op links left, all binaries
}

// Arm arms map-op probes (a write operation: root or api.write_group).
func (c *Client) Arm(ctx context.Context, req ArmRequest) (*ArmStatus, error) {
	var st ArmStatus
	return &st, c.post(ctx, "/v1/mapops/arm", req, &st)
}

// Disarm removes an arm request and its probes (a write operation).
func (c *Client) Disarm(ctx context.Context, req ArmRequest) (*Disarmed, error) {
	var d Disarmed
	return &d, c.post(ctx, "/v1/mapops/disarm", req, &d)
}

// MapOps returns the flight recorder's state.
func (c *Client) MapOps(ctx context.Context) (*MapOpsState, error) {
	var st MapOpsState
	return &st, c.get(ctx, "/v1/mapops", &st)
}
