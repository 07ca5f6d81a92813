package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/bpf"
	"github.com/mapsentry/mapsentry/daemon/api"
	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/daemon/internal/capture"
	"github.com/mapsentry/mapsentry/internal/procmem"
	"github.com/mapsentry/mapsentry/probes"
)

// MapOpsState is what GET /v1/mapops answers.
type MapOpsState = apitype.MapOpsState

// loadMapOps loads the flight recorder; failing to is not fatal (crash
// capture does not need it), it is reported in /v1/mapops.
func (d *Daemon) loadMapOps() {
	m, err := bpf.LoadMapOps()
	if err != nil {
		d.mapopsErr = err.Error()
		d.log.Warn("map-op flight recorder unavailable", "err", err)
		return
	}
	d.mapops = m
}

// mapOpsProbes is the probes.Config part of the flight recorder.
func (d *Daemon) mapOpsProbes(pc *probes.Config) {
	if d.mapops != nil {
		pc.MapOps = d.mapops
	}
	if d.cfg.MapOps.Mode == config.MapOpsAlways {
		pc.MapOpsAlways = d.cfg.MapOps.Always
	}
}

// flightRecorderStage reads the records at a crash and, in mode on-crash,
// arms the crashed binary.
func (d *Daemon) flightRecorderStage() capture.Stage {
	s := capture.FlightRecorderStage{}
	if d.mapops != nil {
		s.Rec = d.mapops
	}
	if d.cfg.MapOps.Mode == config.MapOpsOnCrash && d.mapops != nil {
		s.OnMapCrash = func(binID uint32) {
			if err := d.probes.ArmBinaryID(binID, d.cfg.MapOps.OnCrashFor, probes.ArmedOnCrash); err != nil {
				d.log.Warn("arm map-op probes after a map crash", "binary", binID, "err", err)
			}
		}
	}
	return s
}

func (d *Daemon) closeMapOps() error {
	if d.mapops == nil {
		return nil
	}
	return d.mapops.Close()
}

// MapOpsState implements api.MapOps.
func (d *Daemon) MapOpsState() MapOpsState {
	st := MapOpsState{
		Mode: d.cfg.MapOps.Mode, OnCrashFor: d.cfg.MapOps.OnCrashFor.String(), Always: d.cfg.MapOps.Always,
		Loaded: d.mapops != nil, LoadError: d.mapopsErr,
		Links: d.probes.MapOpLinks(), Arms: d.probes.Arms(),
	}
	if st.Arms == nil {
		st.Arms = []probes.ArmStatus{}
	}
	if d.mapops != nil {
		if ids, err := d.mapops.ProgramIDs(); err == nil {
			for _, id := range ids {
				st.ProgramIDs = append(st.ProgramIDs, uint32(id))
			}
		}
		n, err := d.mapops.KernelLinks()
		st.KernelLinks = n
		if err != nil {
			st.KernelLinksErr = err.Error()
		}
	}
	return st
}

// Arm implements api.MapOps.
func (d *Daemon) Arm(ctx context.Context, req api.ArmRequest) (apitype.ArmStatus, error) {
	if d.mapops == nil {
		return apitype.ArmStatus{}, fmt.Errorf("%w: map-op flight recorder not loaded: %s", api.ErrUnavailable, d.mapopsErr)
	}
	var until time.Time
	if req.For != "" {
		dur, err := time.ParseDuration(req.For)
		if err != nil || dur <= 0 {
			return apitype.ArmStatus{}, fmt.Errorf("%w: for %q: want a positive duration such as 10m", api.ErrBadRequest, req.For)
		}
		until = time.Now().Add(dur)
	}
	var (
		st  probes.ArmStatus
		err error
	)
	switch {
	case (req.Exe == "") == (req.PID == 0):
		return apitype.ArmStatus{}, fmt.Errorf("%w: name exactly one of exe and pid", api.ErrBadRequest)
	case req.Exe != "":
		st, err = d.probes.ArmExe(req.Exe, until, probes.ArmedByCLI)
	default:
		st, err = d.probes.ArmPID(req.PID, until, probes.ArmedByCLI)
	}
	if err != nil {
		return apitype.ArmStatus{}, armError(err)
	}
	d.log.Info("map-op probes armed", "exe", st.Path, "pid", req.PID, "for", req.For, "links", st.Links)
	return st, nil
}

// Disarm implements api.MapOps.
func (d *Daemon) Disarm(ctx context.Context, req api.ArmRequest) (apitype.Disarmed, error) {
	var n int
	switch {
	case (req.Exe == "") == (req.PID == 0):
		return apitype.Disarmed{}, fmt.Errorf("%w: name exactly one of exe and pid", api.ErrBadRequest)
	case req.Exe != "":
		var err error
		if n, err = d.probes.DisarmExe(req.Exe); err != nil {
			return apitype.Disarmed{}, armError(err)
		}
	default:
		n = d.probes.DisarmPID(req.PID)
	}
	if n == 0 {
		return apitype.Disarmed{}, classified{errors.New("nothing armed for that"), api.ErrNotFound}
	}
	d.log.Info("map-op probes disarmed", "exe", req.Exe, "pid", req.PID, "requests", n)
	return apitype.Disarmed{Disarmed: n, Links: d.probes.MapOpLinks()}, nil
}

// armError classifies err for the API's status code, keeping its text.
func armError(err error) error {
	switch {
	case errors.Is(err, probes.ErrNotWatched), errors.Is(err, os.ErrNotExist), errors.Is(err, procmem.ErrGone):
		return classified{err, api.ErrNotFound}
	case errors.Is(err, probes.ErrMapOpsUnavailable):
		return classified{err, api.ErrUnavailable}
	}
	return err
}

// classified is an error whose text is err's and which also matches class.
type classified struct{ err, class error }

func (c classified) Error() string   { return c.err.Error() }
func (c classified) Unwrap() []error { return []error{c.err, c.class} }
