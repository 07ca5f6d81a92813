package report

import "time"

// Group is every stored crash with one signature: `mapsentry crashes
// --group` lists them, most recent first.
type Group struct {
	Signature string `json:"signature"`
	// Title is the kind and the two functions (and the variable).
	Title string `json:"title"`
	Kind  Kind   `json:"kind"`
	// Count is Captured + Suppressed: every crash seen with the signature.
	Count int `json:"count"`
	// Captured crashes have a full report; Suppressed ones were counted
	// by the crash-loop budget without one (docs/crashsite.md).
	Captured   int       `json:"captured"`
	Suppressed int       `json:"suppressed,omitempty"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
	// Binaries are the executables and versions it was seen in (bounded).
	Binaries []GroupBinary `json:"binaries"`
	// ExampleID is the newest full report of the group.
	ExampleID string `json:"example_id,omitempty"`
}

// GroupBinary is one executable a group's crashes came from.
type GroupBinary struct {
	Exe       string `json:"exe"`
	GoVersion string `json:"go_version,omitempty"`
	BuildID   string `json:"build_id,omitempty"`
	Count     int    `json:"count"`
}

// MaxGroupBinaries bounds the binaries listed per group.
const MaxGroupBinaries = 16
