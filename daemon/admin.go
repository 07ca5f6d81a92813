package daemon

// DeleteCrash implements api.CrashDeleter: a write route.
func (d *Daemon) DeleteCrash(id string) error { return d.pub.DeleteCrash(id) }
