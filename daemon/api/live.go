package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/mapsentry/mapsentry/internal/inspect"
	"github.com/mapsentry/mapsentry/internal/procmem"
)

// Live is the on-demand inspection of running processes: each call stops
// the process briefly and always resumes it (inspect.Inspector).
type Live interface {
	Decode(ctx context.Context, req inspect.DecodeRequest) (*inspect.DecodeResult, error)
	Dump(ctx context.Context, req inspect.DumpRequest) (*inspect.DumpResult, error)
}

// liveTimeout bounds a whole live request: reading the binary before the
// freeze, the freeze (itself bounded by freeze.max) and naming after it.
// A client that goes away cancels the request, which resumes the process
// at once.
const liveTimeout = 30 * time.Second

// maxLiveBody bounds a request body: a few numbers.
const maxLiveBody = 64 << 10

// HandleLive adds the write routes POST /v1/decode and POST /v1/dump: they
// stop another process, so they need root or api.write_group.
func (s *Server) HandleLive(l Live) {
	s.HandleFunc(Write, "POST /v1/decode", func(w http.ResponseWriter, r *http.Request) {
		var req inspect.DecodeRequest
		if !readBody(w, r, &req) {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), liveTimeout)
		defer cancel()
		res, err := l.Decode(ctx, req)
		s.answerLive(w, r, "decode", req.PID, res, err)
	})
	s.HandleFunc(Write, "POST /v1/dump", func(w http.ResponseWriter, r *http.Request) {
		var req inspect.DumpRequest
		if !readBody(w, r, &req) {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), liveTimeout)
		defer cancel()
		res, err := l.Dump(ctx, req)
		s.answerLive(w, r, "dump", req.PID, res, err)
	})
}

func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxLiveBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	return true
}

func (s *Server) answerLive(w http.ResponseWriter, r *http.Request, op string, pid int, res any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, res)
		return
	}
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, inspect.ErrRefused):
		code = http.StatusBadRequest
	case errors.Is(err, procmem.ErrGone):
		code = http.StatusNotFound
	case errors.Is(err, inspect.ErrBusy):
		code = http.StatusConflict
	case r.Context().Err() != nil:
		code = http.StatusServiceUnavailable
	}
	s.log.Info("live request failed", "op", op, "pid", pid, "status", code, "err", err)
	writeError(w, code, err)
}
