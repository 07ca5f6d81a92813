package store

import (
	"encoding/json"
	"fmt"

	"github.com/mapsentry/mapsentry/report"
)

// Merge folds into newer what only older has of what reaches a report
// after its capture by another path: the exit status or signal (the
// process's exit, observed later) and the fatal events of threads that
// reached fatal after the release. A report stored again under its id —
// a capture that publishes before and after the release, a spooled copy
// moved in — thereby never loses what an update added meanwhile.
func Merge(older, newer *report.Crash) {
	if older.Freeze.ExitStatus != nil || older.Freeze.ExitSignal != nil {
		newer.Freeze.ExitStatus, newer.Freeze.ExitSignal = older.Freeze.ExitStatus, older.Freeze.ExitSignal
	}
	for _, e := range older.Fatal.Events {
		if e.AfterRelease && !hasEvent(newer.Fatal.Events, e) {
			newer.Fatal.Events = append(newer.Fatal.Events, e)
		}
	}
}

func hasEvent(events []report.Event, e report.Event) bool {
	for _, x := range events {
		if x.TID == e.TID && x.KTimeNS == e.KTimeNS {
			return true
		}
	}
	return false
}

// MergeJSON is Merge on encoded reports: newer with what only older has.
func MergeJSON(older, newer []byte) ([]byte, error) {
	var o, n report.Crash
	if err := json.Unmarshal(newer, &n); err != nil {
		return nil, fmt.Errorf("decode newer report: %w", err)
	}
	if err := json.Unmarshal(older, &o); err != nil {
		// An unreadable older copy has nothing to keep.
		return newer, nil
	}
	Merge(&o, &n)
	return json.Marshal(&n)
}
