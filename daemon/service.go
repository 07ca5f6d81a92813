package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/mapsentry/mapsentry/daemon/api"
	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/daemon/internal/publish"
	"github.com/mapsentry/mapsentry/probes"
)

// SelftestDir is where `mapsentry selftest` places its crashing program:
// below the state directory, and always in the daemon's scope (unless
// discovery.exclude names it), so a narrow discovery.include does not make
// the self-test fail on a healthy host.
func SelftestDir(stateDir string) string { return filepath.Join(stateDir, "selftest") }

// scopeInclude is discovery.include plus the self-test directory. An empty
// include already means everything and stays empty.
func scopeInclude(cfg config.Config) []string {
	if len(cfg.Discovery.Include) == 0 {
		return nil
	}
	return append(append([]string{}, cfg.Discovery.Include...), SelftestDir(cfg.StateDir)+"/**")
}

// startupChecks runs Preflight, logs one line per missing piece and
// returns an error naming every fatal one.
func startupChecks(cfg config.Config, log *slog.Logger) ([]Check, error) {
	checks := Preflight(cfg.Freeze.Enabled)
	for _, c := range checks {
		switch {
		case c.OK:
		case c.Fatal:
			log.Error("start-up check failed", "check", c.Name, "detail", c.Detail)
		default:
			log.Warn("start-up check failed; running degraded", "check", c.Name, "detail", c.Detail)
		}
	}
	return checks, PreflightError(checks)
}

// apiPolicy resolves api.group and api.write_group for the socket server.
func apiPolicy(cfg config.Config, srv *api.Server) error {
	pol, err := api.NewPolicy(cfg.API.Group, cfg.API.WriteGroup)
	if err != nil {
		return fmt.Errorf("socket access: %w", err)
	}
	if cfg.API.WriteGroup != "" && pol.WriteGID == nil {
		return fmt.Errorf("config api.write_group=%s: no such group", cfg.API.WriteGroup)
	}
	srv.SetPolicy(pol)
	return nil
}

// serveSystemd tells systemd the daemon is ready once the first /proc scan
// has put probes on the Go programs already running (so `systemctl start`
// and `restart` return with them covered), then keeps its status text
// current and pings the watchdog while the daemon is healthy, until ctx
// ends; it then says STOPPING. Without NOTIFY_SOCKET it only returns.
func (d *Daemon) serveSystemd(ctx context.Context) {
	n, err := newNotifier()
	if err != nil {
		d.log.Warn("systemd notify", "err", err)
		return
	}
	defer n.Close()
	if !n.Active() {
		return // not under systemd: nobody reads the status or pings
	}
	every, err := watchdogInterval()
	if err != nil {
		d.log.Warn("systemd watchdog", "err", err)
	}
	for d.probes.Stats().Scans == 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	status, _ := d.health()
	if err := n.Send("READY=1\nSTATUS=" + status); err != nil {
		d.log.Warn("systemd notify", "err", err)
	}
	period := 5 * time.Second
	if every > 0 && every < period {
		period = every
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = n.Send("STOPPING=1\nSTATUS=stopping: resuming frozen processes")
			return
		case <-t.C:
		}
		status, err := d.health()
		msg := "STATUS=" + status
		// A daemon that cannot read its own BPF maps or store is not
		// observing anything: stop pinging and let systemd restart it.
		if err == nil && every > 0 {
			msg += "\nWATCHDOG=1"
		}
		if err != nil {
			d.log.Error("health check failed; not pinging the watchdog", "err", err)
		}
		if err := n.Send(msg); err != nil {
			d.log.Warn("systemd notify", "err", err)
		}
	}
}

// health is the one-line status text and whether the daemon is alive: its
// event loop turns, and it can read its BPF maps. A store that is
// unavailable is not unhealth: crashes are still captured and spooled (a
// watchdog restart would not mend a full disk), so it shows in the text
// only.
func (d *Daemon) health() (string, error) {
	lerr := d.loop.check()
	_, kerr := d.kernel.Counters()
	if err := errors.Join(lerr, kerr); err != nil {
		return "unhealthy: " + err.Error(), err
	}
	n, _ := d.pub.CountCrashes()
	ds, cs := d.probes.Stats(), d.capture.Stats()
	degraded := ""
	for _, c := range d.checks {
		if !c.OK {
			degraded = ", degraded: " + c.Name + " missing"
			break
		}
	}
	if ps := d.pub.Stats(); ps.State == publish.StateDegraded {
		degraded += fmt.Sprintf(", store unavailable (%d reports spooled, %d in memory): %s", ps.Spooled, ps.Memory, ps.Error)
	}
	if ds.Gate.State == probes.GateUnavailable {
		degraded += ", exec gate unavailable (new binaries run before their probes are in): " + ds.Gate.Reason
	}
	scope := ""
	if !d.scope.Host {
		scope = fmt.Sprintf(" in PID namespace %d only", d.scope.PIDNamespace)
	}
	return fmt.Sprintf("watching %d Go binaries (%d processes)%s, %d crashes stored, %d frozen now%s",
		ds.BinariesWatched, ds.GoProcesses, scope, n, cs.ActiveFreezes, degraded), nil
}
