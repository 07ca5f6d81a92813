package daemon

import "github.com/mapsentry/mapsentry/report"

// DeleteCrash implements api.CrashDeleter: a write route.
func (d *Daemon) DeleteCrash(id string) error { return d.pub.DeleteCrash(id) }

// Groups groups the crashes by signature.
func (d *Daemon) Groups() ([]report.Group, error) { return d.pub.Groups() }
