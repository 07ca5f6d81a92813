package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/mapsentry/mapsentry/apitype"
)

// ArmRequest names what to arm or disarm with map-op probes.
type ArmRequest = apitype.ArmRequest

// MapOps is the map-op flight recorder's control (daemon side).
type MapOps interface {
	Arm(ctx context.Context, req ArmRequest) (apitype.ArmStatus, error)
	Disarm(ctx context.Context, req ArmRequest) (apitype.Disarmed, error)
	MapOpsState() apitype.MapOpsState
}

// Errors MapOps returns that map to a status code.
var (
	// ErrBadRequest: the request names nothing, or both, or a bad duration.
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound: no such watched process or binary.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the flight recorder is not loaded.
	ErrUnavailable = errors.New("unavailable")
)

// HandleMapOps adds GET /v1/mapops (read) and the write routes POST
// /v1/mapops/arm and /v1/mapops/disarm: arming slows every map operation
// of the armed processes, so it needs root or api.write_group.
func (s *Server) HandleMapOps(m MapOps) {
	s.HandleFunc(Read, "GET /v1/mapops", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, m.MapOpsState())
	})
	for path, do := range map[string]func(context.Context, ArmRequest) (any, error){
		"POST /v1/mapops/arm":    func(ctx context.Context, req ArmRequest) (any, error) { return m.Arm(ctx, req) },
		"POST /v1/mapops/disarm": func(ctx context.Context, req ArmRequest) (any, error) { return m.Disarm(ctx, req) },
	} {
		s.HandleFunc(Write, path, func(w http.ResponseWriter, r *http.Request) {
			var req ArmRequest
			if !readBody(w, r, &req) {
				return
			}
			res, err := do(r.Context(), req)
			if err == nil {
				writeJSON(w, http.StatusOK, res)
				return
			}
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, ErrBadRequest):
				code = http.StatusBadRequest
			case errors.Is(err, ErrNotFound):
				code = http.StatusNotFound
			case errors.Is(err, ErrUnavailable):
				code = http.StatusServiceUnavailable
			}
			s.log.Info("map-op request failed", "route", path, "status", code, "err", err)
			writeError(w, code, err)
		})
	}
}
