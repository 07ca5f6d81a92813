package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/apitype/live"
	"github.com/mapsentry/mapsentry/daemon/api"
	"github.com/mapsentry/mapsentry/daemon/config"
	"github.com/mapsentry/mapsentry/daemon/store"
	"github.com/mapsentry/mapsentry/report"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.json from the current output")

// The golden tests run every `-o json` command through the real code
// path: cobra command, client, socket, daemon/api handlers. The daemon
// behind the handlers is wire: every value it answers is an apitype (or
// report) value with every field set, by fill, to a fixed non-zero value.
// So the output is deterministic, a field the CLI drops is missing from
// it, and a field added to a wire type shows up in the diff.
type wire struct {
	status   apitype.Status
	binaries []apitype.Binary
	crashes  []report.Crash
	mapops   apitype.MapOpsState
	arm      apitype.ArmStatus
	decode   live.DecodeResult
	dump     live.DumpResult
}

func newWire() *wire {
	w := &wire{}
	for _, p := range []any{&w.status, &w.binaries, &w.crashes, &w.mapops, &w.arm, &w.decode, &w.dump} {
		fill(reflect.ValueOf(p).Elem(), &filler{})
	}
	return w
}

func (w *wire) Status() apitype.Status                    { return w.status }
func (w *wire) Binaries() []apitype.Binary                { return w.binaries }
func (w *wire) Crashes(limit int) ([]report.Crash, error) { return w.crashes, nil }
func (w *wire) Crash(id string) (*report.Crash, error) {
	for i := range w.crashes {
		if w.crashes[i].ID == id {
			return &w.crashes[i], nil
		}
	}
	return nil, store.ErrNotFound
}
func (w *wire) DeleteCrash(id string) error {
	_, err := w.Crash(id)
	return err
}
func (w *wire) MapOpsState() apitype.MapOpsState { return w.mapops }
func (w *wire) Arm(context.Context, api.ArmRequest) (apitype.ArmStatus, error) {
	return w.arm, nil
}
func (w *wire) Disarm(context.Context, api.ArmRequest) (apitype.Disarmed, error) {
	return apitype.Disarmed{Disarmed: 1, Links: 2}, nil
}
func (w *wire) Decode(context.Context, apitype.DecodeRequest) (*live.DecodeResult, error) {
	return &w.decode, nil
}
func (w *wire) Dump(context.Context, apitype.DumpRequest) (*live.DumpResult, error) {
	return &w.dump, nil
}

// filler sets every exported field to a fixed value derived from a
// counter, so that outputs are stable and no field is zero (and so none is
// left out by omitempty).
type filler struct {
	n     int
	depth int
}

var fixedTime = time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC)

func fill(v reflect.Value, f *filler) {
	if f.depth > 6 {
		return // recursive types (frames of frames): deep enough
	}
	f.n++
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(fixedTime.Add(time.Duration(f.n) * time.Second)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", f.n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(f.n % 100))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(uint64(f.n % 200))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(f.n) / 4)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		f.depth++
		fill(p.Elem(), f)
		f.depth--
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		f.depth++
		fill(s.Index(0), f)
		f.depth--
		v.Set(s)
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i), f)
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		f.depth++
		fill(k, f)
		fill(e, f)
		f.depth--
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), f)
			}
		}
	}
}

// goldenCase is one `-o json` command line and what the daemon sent for
// it, when the output is that as it is (dump --summary is computed from
// it). local: the command does not ask the daemon (config).
type goldenCase struct {
	name  string
	args  []string
	sent  func(*wire) any
	local bool
}

func goldenCases() []goldenCase {
	return []goldenCase{
		{name: "status", args: []string{"status"}, sent: func(w *wire) any { return w.status }},
		{name: "ps", args: []string{"ps"}, sent: func(w *wire) any { return w.binaries }},
		{name: "crashes", args: []string{"crashes"}, sent: func(w *wire) any { return w.crashes }},
		{name: "show", args: []string{"show", "ID"}, sent: func(w *wire) any { return w.crashes[0] }},
		{name: "decode", args: []string{"decode", "--pid", "1", "--addr", "0xc000012345"}, sent: func(w *wire) any { return w.decode.Map }},
		{name: "dump", args: []string{"dump", "--pid", "1"}, sent: func(w *wire) any { return w.dump.Goroutines }},
		{name: "dump-summary", args: []string{"dump", "--pid", "1", "--summary"}},
		{name: "arm-list", args: []string{"arm"}, sent: func(w *wire) any { return w.mapops }},
		{name: "arm", args: []string{"arm", "--pid", "1"}, sent: func(w *wire) any { return w.arm }},
		{name: "config", args: []string{"config", "--config", "testdata/golden/config.yaml", "--log-level", "debug"}, local: true},
	}
}

// notGolden are the commands with -o json that need a live daemon on a
// real host; the integration tests cover them.
var notGolden = map[string]string{
	"selftest": "crashes a real program through a running daemon (integration TestSelftest*)",
}

// TestGoldenJSON runs every -o json command against a daemon API that
// answers fixed wire values, and compares the output with
// testdata/golden/NAME.json. After a deliberate change to a wire type or
// to what a command prints:
//
//	go test ./cmd/mapsentry -run TestGoldenJSON -update
//
// and commit the changed files.
func TestGoldenJSON(t *testing.T) {
	for _, k := range config.Keys() {
		t.Setenv(config.EnvName(k), "") // the environment of whoever runs the test is not the golden one
	}
	t.Setenv("MAPSENTRY_CONFIG", "")
	t.Setenv(config.EnvName("freeze.max"), "3s") // one value from the environment, to show its source
	w := newWire()
	w.crashes[0].ID = "ID"
	sock := serveWire(t, w)
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			args := append(c.args, "-o", "json")
			if !c.local {
				args = append(args, "--socket", sock)
			}
			out := runCLI(t, args...)
			if c.sent != nil {
				sent, err := json.Marshal(c.sent(w))
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range missingPaths(t, sent, out) {
					t.Errorf("mapsentry %s -o json drops %s, which the daemon sends", strings.Join(c.args, " "), p)
				}
			}
			compareGolden(t, c.name, out)
		})
	}
}

// TestGoldenCoversEveryJSONCommand: each command with -o has a golden case
// (or a reason in notGolden), so a new command's JSON is pinned too.
func TestGoldenCoversEveryJSONCommand(t *testing.T) {
	covered := map[string]bool{}
	for _, c := range goldenCases() {
		covered[c.args[0]] = true
	}
	walk(newRoot(), func(cmd *cobra.Command) {
		if cmd.Flags().Lookup("output") == nil || cmd.HasSubCommands() {
			return
		}
		if !covered[cmd.Name()] && notGolden[cmd.Name()] == "" {
			t.Errorf("command %q has -o json but no golden case: add it to goldenCases in cmd/mapsentry/golden_test.go, "+
				"then go test ./cmd/mapsentry -run TestGoldenJSON -update", cmd.CommandPath())
		}
	})
}

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, s := range c.Commands() {
		walk(s, fn)
	}
}

// serveWire serves w on a socket through the daemon's real API server,
// with this process's group allowed to read and write.
func serveWire(t *testing.T, w *wire) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ms-golden") // short: a unix socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	srv := newWireServer(sock, w)
	gid := uint32(os.Getegid())
	srv.SetPolicy(api.Policy{ReadGroup: "self", ReadGID: &gid, WriteGroup: "self", WriteGID: &gid})
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("api server: %v", err)
		}
	})
	return sock
}

// newWireServer is the daemon's API server with every route of the api
// package, answering w.
func newWireServer(sock string, w *wire) *api.Server {
	srv := api.New(sock, w, slog.New(slog.DiscardHandler))
	srv.HandleLive(w)
	srv.HandleMapOps(w)
	return srv
}

// runCLI runs the mapsentry command line in this process and returns its
// standard output.
func runCLI(t *testing.T, args ...string) []byte {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("mapsentry %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

func compareGolden(t *testing.T, name string, out []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".json")
	if *update {
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s missing: go test ./cmd/mapsentry -run TestGoldenJSON -update, and commit it", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(out, want) {
		return
	}
	added, dropped := missingPaths(t, out, want), missingPaths(t, want, out)
	for _, p := range added {
		t.Errorf("%s: field %s is in the output but not in the golden file", path, p)
	}
	for _, p := range dropped {
		t.Errorf("%s: field %s is in the golden file but no longer in the output", path, p)
	}
	if len(added)+len(dropped) == 0 {
		t.Errorf("%s: the output's values differ from the golden file's:\n%s", path, firstDiff(want, out))
	}
	t.Logf("if the change is deliberate: go test ./cmd/mapsentry -run TestGoldenJSON -update, and commit %s", path)
}

// missingPaths lists the JSON field paths of want (a.b[].c) absent from got.
func missingPaths(t *testing.T, want, got []byte) []string {
	t.Helper()
	pw, pg := jsonPaths(t, want), jsonPaths(t, got)
	var out []string
	for p := range pw {
		if !pg[p] {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	// A missing object also misses all its fields: name the object only.
	return slices.DeleteFunc(out, func(p string) bool {
		for _, q := range out {
			if q != p && strings.HasPrefix(p, q) && (p[len(q)] == '.' || p[len(q)] == '[') {
				return true
			}
		}
		return false
	})
}

func jsonPaths(t *testing.T, data []byte) map[string]bool {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, data)
	}
	paths := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				paths[p] = true
				walk(p, e)
			}
		case []any:
			for _, e := range x {
				walk(prefix+"[]", e)
			}
		}
	}
	walk("", v)
	return paths
}

func firstDiff(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range max(len(la), len(lb)) {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n  golden: %s\n  output: %s", i+1, x, y)
		}
	}
	return ""
}
