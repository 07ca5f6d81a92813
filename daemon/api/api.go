// Package api owns the daemon's local API: HTTP/JSON over a unix socket
// under versioned paths (/v1/...). The socket file is created under a
// temporary name, given its mode, then renamed into place, so it is never
// reachable with looser permissions.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/report"
)

// Backend is what the API serves.
type Backend interface {
	Status() any
	Binaries() any
	Crashes(limit int) ([]report.Crash, error)
	Crash(id string) (*report.Crash, error)
}

// Server serves the API on a unix socket.
type Server struct {
	path string
	b    Backend
	log  *slog.Logger
	mux  *http.ServeMux
}

// New makes a server for socket path.
func New(path string, b Backend, log *slog.Logger) *Server {
	s := &Server{path: path, b: b, log: log.With("component", "api"), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Status()) })
	s.mux.HandleFunc("GET /v1/ps", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Binaries()) })
	s.mux.HandleFunc("GET /v1/crashes", s.crashes)
	s.mux.HandleFunc("GET /v1/crashes/{id}", s.crash)
	return s
}

// Handle adds a handler (for other components, e.g. /metrics).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Listen creates the socket with mode 0660, replacing a stale one.
func (s *Server) Listen() (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	tmp := s.path + ".tmp" + strconv.Itoa(os.Getpid())
	_ = os.Remove(tmp)
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		l.Close()
		return nil, fmt.Errorf("move socket into place: %w", err)
	}
	return l, nil
}

// Run serves on l until ctx ends, then removes the socket.
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		_ = os.Remove(s.path)
		return err
	case err := <-errc:
		_ = os.Remove(s.path)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve API: %w", err)
	}
}

func (s *Server) crashes(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit=%q: want 1..100000", v))
			return
		}
		limit = n
	}
	cs, err := s.b.Crashes(limit)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, cs)
}

func (s *Server) crash(w http.ResponseWriter, r *http.Request) {
	c, err := s.b.Crash(r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, err)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, Error{Error: err.Error()})
}
