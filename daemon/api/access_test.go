package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/report"
)

func gid(n uint32) *uint32 { return &n }

func TestPolicy(t *testing.T) {
	readOnly := Policy{ReadGroup: "mapsentry", ReadGID: gid(900)}
	both := Policy{ReadGroup: "mapsentry", ReadGID: gid(900), WriteGroup: "sre", WriteGID: gid(901)}
	cases := []struct {
		name string
		pol  Policy
		peer Peer
		a    Access
		ok   bool
		msg  string
	}{
		{"root reads", readOnly, Peer{UID: 0}, Read, true, ""},
		{"root writes", readOnly, Peer{UID: 0}, Write, true, ""},
		{"outsider reads", readOnly, Peer{UID: 1000, GID: 1000}, Read, false, "neither root nor in the group mapsentry (gid 900)"},
		{"member by primary group reads", readOnly, Peer{UID: 1000, GID: 900}, Read, true, ""},
		{"member by supplementary group reads", readOnly, Peer{UID: 1000, GID: 1000, Groups: []uint32{5, 900}}, Read, true, ""},
		{"member writes", readOnly, Peer{UID: 1000, GID: 900}, Write, false, "needs root (api.write_group is not set)"},
		{"member writes, write group set", both, Peer{UID: 1000, GID: 900}, Write, false, "root or the group sre (gid 901)"},
		{"writer writes", both, Peer{UID: 1000, Groups: []uint32{901}}, Write, true, ""},
		{"writer reads", both, Peer{UID: 1000, Groups: []uint32{901}}, Read, true, ""},
		{"zero policy: root only", Policy{}, Peer{UID: 1000, GID: 0}, Read, false, "(none configured)"},
		{"group that does not exist", Policy{ReadGroup: "nosuch"}, Peer{UID: 1000}, Read, false, "nosuch (no such group)"},
	}
	for _, tc := range cases {
		err := tc.pol.Check(tc.peer, tc.a)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
			continue
		}
		if err != nil && (!errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("%s: err = %v, want ErrDenied mentioning %q", tc.name, err, tc.msg)
		}
	}
}

func TestResolveGroup(t *testing.T) {
	if g, ok, err := ResolveGroup("4242"); err != nil || !ok || g != 4242 {
		t.Errorf("numeric: %d %v %v", g, ok, err)
	}
	if _, ok, err := ResolveGroup("mapsentry-no-such-group"); err != nil || ok {
		t.Errorf("unknown group: ok=%v err=%v, want not ok and no error", ok, err)
	}
	if _, ok, _ := ResolveGroup(""); ok {
		t.Error("empty group resolved")
	}
}

type fakeBackend struct{ deleted []string }

func (f *fakeBackend) Status() apitype.Status                    { return apitype.Status{Version: "test"} }
func (f *fakeBackend) Binaries() []apitype.Binary                { return []apitype.Binary{} }
func (f *fakeBackend) Crashes(limit int) ([]report.Crash, error) { return nil, nil }
func (f *fakeBackend) Crash(id string) (*report.Crash, error)    { return nil, store.ErrNotFound }
func (f *fakeBackend) DeleteCrash(id string) error {
	f.deleted = append(f.deleted, id)
	return nil
}

// TestRoutesCheckPeerCredentials serves on a real unix socket and reads
// real SO_PEERCRED: this test process is the peer. A policy that admits
// our own gid for reading but not writing shows both outcomes without
// needing a second user (the privileged tests do that with setpriv).
func TestRoutesCheckPeerCredentials(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Log("running as root: root may do everything, so only the allowed paths are exercised here")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	b := &fakeBackend{}
	srv := New(sock, b, slog.New(slog.DiscardHandler))
	srv.SetPolicy(Policy{ReadGroup: "self", ReadGID: gid(uint32(os.Getegid()))})
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, err %v; want 0660", st.Mode().Perm(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	defer func() { cancel(); <-done }()

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	do := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, "http://x"+path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error
	}
	if code, msg := do("GET", "/v1/status"); code != http.StatusOK {
		t.Errorf("read as group member: %d %s", code, msg)
	}
	code, msg := do("DELETE", "/v1/crashes/x")
	switch {
	case os.Geteuid() == 0 && code != http.StatusNoContent:
		t.Errorf("write as root: %d %s", code, msg)
	case os.Geteuid() != 0 && (code != http.StatusForbidden || !strings.Contains(msg, "write operation")):
		t.Errorf("write as group member: %d %q, want 403 naming the write operation", code, msg)
	}
	if os.Geteuid() != 0 && len(b.deleted) != 0 {
		t.Errorf("a refused write reached the backend: %v", b.deleted)
	}
}
