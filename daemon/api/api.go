// Package api owns the daemon's local API: HTTP/JSON over a unix socket
// under versioned paths (/v1/...). The socket file is created under a
// temporary name, given its mode (0660) and group, then renamed into place,
// so it is never reachable with looser permissions. Every route is marked
// read or write, and every request is checked against the caller's peer
// credentials (SO_PEERCRED, SO_PEERGROUPS): root may do everything, the
// configured group may read, write routes need root or api.write_group.
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
	"slices"
	"strconv"
	"time"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/report"
)

// Backend is what the API serves.
type Backend interface {
	Status() apitype.Status
	Binaries() []apitype.Binary
	Crashes(limit int) ([]report.Crash, error)
	Crash(id string) (*report.Crash, error)
}

// CrashGrouper is implemented by backends that group crashes by
// signature (GET /v1/crashes/groups).
type CrashGrouper interface {
	Groups() ([]report.Group, error)
}

// CrashDeleter is implemented by backends that can delete a report.
type CrashDeleter interface {
	DeleteCrash(id string) error
}

// Server serves the API on a unix socket.
type Server struct {
	path   string
	b      Backend
	log    *slog.Logger
	mux    *http.ServeMux
	policy Policy
	routes []Route
}

// Route is one registered route and the access it needs.
type Route struct {
	Pattern string // as given to http.ServeMux: "GET /v1/status"
	Access  Access
}

// New makes a server for socket path. Until SetPolicy, only root may use it.
func New(path string, b Backend, log *slog.Logger) *Server {
	s := &Server{path: path, b: b, log: log.With("component", "api"), mux: http.NewServeMux()}
	s.HandleFunc(Read, "GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Status()) })
	s.HandleFunc(Read, "GET /v1/ps", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Binaries()) })
	s.HandleFunc(Read, "GET /v1/crashes", s.crashes)
	s.HandleFunc(Read, "GET /v1/crashes/{id}", s.crash)
	if g, ok := b.(CrashGrouper); ok {
		s.HandleFunc(Read, "GET /v1/crashes/groups", func(w http.ResponseWriter, r *http.Request) {
			gs, err := g.Groups()
			if err != nil {
				writeError(w, http.StatusInternalServerError, err)
				return
			}
			writeJSON(w, http.StatusOK, gs)
		})
	}
	if d, ok := b.(CrashDeleter); ok {
		s.HandleFunc(Write, "DELETE /v1/crashes/{id}", func(w http.ResponseWriter, r *http.Request) { s.deleteCrash(w, r, d) })
	}
	return s
}

// SetPolicy sets who may use which routes. Call it before Listen: the
// policy's read group also becomes the socket's group.
func (s *Server) SetPolicy(p Policy) { s.policy = p }

// Handle adds a read route (for other components, e.g. /metrics).
func (s *Server) Handle(pattern string, h http.Handler) { s.handle(Read, pattern, h) }

// HandleWrite adds a write route: root (or api.write_group) only.
func (s *Server) HandleWrite(pattern string, h http.Handler) { s.handle(Write, pattern, h) }

// HandleFunc adds a route that needs a.
func (s *Server) HandleFunc(a Access, pattern string, h http.HandlerFunc) { s.handle(a, pattern, h) }

// handle is the one way a route is added: guarded, and listed in Routes.
func (s *Server) handle(a Access, pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.guard(a, h))
	s.routes = append(s.routes, Route{Pattern: pattern, Access: a})
}

// Routes lists every route added so far, in order (docs/security.md
// documents each; a test checks).
func (s *Server) Routes() []Route { return slices.Clone(s.routes) }

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
	if g := s.policy.ReadGID; g != nil {
		// Without CAP_CHOWN this works only for a group the daemon runs
		// in, which is how the unit runs it (Group=mapsentry).
		if err := os.Chown(tmp, -1, int(*g)); err != nil {
			l.Close()
			_ = os.Remove(tmp)
			return nil, fmt.Errorf("give socket to group %s (api.group; the daemon must run in that group): %w",
				groupName(s.policy.ReadGroup, g), err)
		}
	} else {
		s.log.Warn("socket is root-only: api.group does not name an existing group", "api.group", s.policy.ReadGroup)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		l.Close()
		return nil, fmt.Errorf("move socket into place: %w", err)
	}
	return l, nil
}

// Run serves on l until ctx ends, then removes the socket.
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second, ConnContext: connContext}
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

func (s *Server) deleteCrash(w http.ResponseWriter, r *http.Request, d CrashDeleter) {
	err := d.DeleteCrash(r.PathValue("id"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// Error is the body of every non-2xx answer.
type Error = apitype.Error

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, Error{Error: err.Error()})
}
