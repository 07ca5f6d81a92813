// Package jaegertest runs a real Jaeger v2 all-in-one for tests and reads
// traces back through its query API, the JSON the Jaeger UI reads. Each
// Jaeger listens on free loopback ports (never a user's Jaeger on the
// default ones), with the config written by scripts/run-jaeger.sh, and is
// killed by PID when the test ends.
//
// Tests using it are in the privileged tier (internal/testenv): they need a
// real external component, built from the Go module proxy into
// .cache/bin/jaeger by scripts/build-jaeger.sh (built here when missing).
package jaegertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// Jaeger is one Jaeger process (or, before Start, its reserved ports).
type Jaeger struct {
	// OTLPGRPC and OTLPHTTP are host:port of the OTLP receiver.
	OTLPGRPC, OTLPHTTP string
	// QueryURL is the base URL of the UI and /api.
	QueryURL string

	root, bin, dir, log string
	queryGRPC           string
	started             bool
}

// Start reserves ports and starts a Jaeger; see New and (*Jaeger).Start.
func Start(t testing.TB) *Jaeger {
	t.Helper()
	j := New(t)
	j.Start(t)
	return j
}

// New reserves free loopback ports for a Jaeger without starting it, so
// that a test can point an exporter at it while it is still down.
func New(t testing.TB) *Jaeger {
	t.Helper()
	root, bin := binary(t)
	p := freePorts(t, 4)
	dir := t.TempDir()
	return &Jaeger{
		OTLPGRPC:  fmt.Sprintf("127.0.0.1:%d", p[0]),
		OTLPHTTP:  fmt.Sprintf("127.0.0.1:%d", p[1]),
		QueryURL:  fmt.Sprintf("http://127.0.0.1:%d", p[2]),
		queryGRPC: fmt.Sprintf("127.0.0.1:%d", p[3]),
		root:      root, bin: bin, dir: dir,
		log: filepath.Join(dir, "jaeger.log"),
	}
}

// repoRoot walks up from the working directory (a package directory when
// under go test) to the directory holding scripts/run-jaeger.sh.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "run-jaeger.sh")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("jaegertest: no scripts/run-jaeger.sh above the working directory")
		}
		dir = parent
	}
}

// binary returns the cached Jaeger binary, building it with
// scripts/build-jaeger.sh when missing (minutes on a cold cache; CI builds
// it once before the tests).
func binary(t testing.TB) (root, bin string) {
	t.Helper()
	// Privileged tier, like the real-BPF tests: a real external process.
	// Skipped when not root, failed under MAPSENTRY_REQUIRE_PRIVILEGED=1.
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "privileged tier: runs a real Jaeger (run as root, as CI does)")
	}
	root = repoRoot(t)
	bin = filepath.Join(root, ".cache", "bin", "jaeger")
	if _, err := os.Stat(bin); err == nil {
		return root, bin
	}
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Unavailable(t, "no Jaeger at "+bin+" and no go to build it")
	}
	t.Logf("building Jaeger into %s (scripts/build-jaeger.sh); this takes minutes", bin)
	start := time.Now()
	out, err := exec.Command(filepath.Join(root, "scripts", "build-jaeger.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/build-jaeger.sh: %v\n%s", err, out)
	}
	t.Logf("built Jaeger in %v", time.Since(start).Round(time.Second))
	return root, bin
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func port(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

// Start starts Jaeger on the reserved ports and waits until its OTLP
// receiver and query API answer. It is stopped (SIGTERM, then SIGKILL after
// 10s) by PID when the test ends. Start once per Jaeger.
func (j *Jaeger) Start(t testing.TB) {
	t.Helper()
	if j.started {
		t.Fatal("jaegertest: Start called twice")
	}
	j.started = true
	// The script writes the loopback-only config; Jaeger is started here
	// so that the PID killed at the end is Jaeger's own.
	script := exec.Command(filepath.Join(j.root, "scripts", "run-jaeger.sh"), "--write-config")
	script.Env = append(os.Environ(),
		"JAEGER_DIR="+j.dir,
		"JAEGER_OTLP_GRPC_PORT="+port(j.OTLPGRPC),
		"JAEGER_OTLP_HTTP_PORT="+port(j.OTLPHTTP),
		"JAEGER_QUERY_HTTP_PORT="+port(strings.TrimPrefix(j.QueryURL, "http://")),
		"JAEGER_QUERY_GRPC_PORT="+port(j.queryGRPC),
	)
	out, err := script.Output()
	if err != nil {
		t.Fatalf("scripts/run-jaeger.sh --write-config: %v", err)
	}
	logf, err := os.OpenFile(j.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(j.bin, "--config", "file:"+strings.TrimSpace(string(out)))
	cmd.Stdout, cmd.Stderr = logf, logf
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stopping := time.Now()
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Logf("jaeger pid %d ignored SIGTERM for 10s; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
		took := time.Since(stopping)
		t.Logf("jaeger pid %d stopped in %v", pid, took.Round(time.Millisecond))
		if t.Failed() || took > 3*time.Second {
			t.Logf("jaeger log (tail):\n%s", j.logTail())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("jaeger exited during start-up: %v\n%s", err, j.logTail())
		default:
		}
		if j.ready() {
			t.Logf("jaeger pid %d ready in %v (otlp grpc %s, query %s)", pid, time.Since(started).Round(time.Millisecond), j.OTLPGRPC, j.QueryURL)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("jaeger not ready after 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (j *Jaeger) logTail() string {
	b, _ := os.ReadFile(j.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (j *Jaeger) ready() bool {
	for _, addr := range []string{j.OTLPGRPC, j.OTLPHTTP} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	resp, err := http.Get(j.QueryURL + "/api/services")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Traces is the reply of /api/traces.
type Traces struct {
	Data   []Trace `json:"data"`
	Errors []struct {
		Msg string `json:"msg"`
	} `json:"errors"`
}

// Trace is one trace as the query API returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is one span; times are microseconds.
type Span struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64  `json:"startTime"` // µs since the epoch
	Duration  int64  `json:"duration"`  // µs
	Tags      []KV   `json:"tags"`
	Logs      []Log  `json:"logs"`
	ProcessID string `json:"processID"`
}

// Log is a span event.
type Log struct {
	Timestamp int64 `json:"timestamp"`
	Fields    []KV  `json:"fields"`
}

// Process is a resource: service name and its attributes.
type Process struct {
	ServiceName string `json:"serviceName"`
	Tags        []KV   `json:"tags"`
}

// KV is a tag; numbers decode as float64.
type KV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Map turns tags into a map by key.
func Map(tags []KV) map[string]any {
	m := make(map[string]any, len(tags))
	for _, kv := range tags {
		m[kv.Key] = kv.Value
	}
	return m
}

func (j *Jaeger) get(t testing.TB, path string, q url.Values) Traces {
	t.Helper()
	u := j.QueryURL + path
	if q != nil {
		u += "?" + q.Encode()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var out Traces
	if resp.StatusCode == http.StatusNotFound {
		return out
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode %s: %v", u, err)
	}
	return out
}

// FindTraces lists the traces of service from the last hour
// (/api/traces?service=...).
func (j *Jaeger) FindTraces(t testing.TB, service string) []Trace {
	t.Helper()
	now := time.Now()
	return j.get(t, "/api/traces", url.Values{
		"service": {service},
		"start":   {strconv.FormatInt(now.Add(-time.Hour).UnixMicro(), 10)},
		"end":     {strconv.FormatInt(now.Add(time.Minute).UnixMicro(), 10)},
		"limit":   {"1000"},
	}).Data
}

// Trace fetches one trace by id (/api/traces/{traceID}).
func (j *Jaeger) Trace(t testing.TB, traceID string) (Trace, bool) {
	t.Helper()
	d := j.get(t, "/api/traces/"+traceID, nil).Data
	if len(d) == 0 {
		return Trace{}, false
	}
	return d[0], true
}

// WaitTraces polls until service has exactly want traces, each with spans
// spans, and fails the test after within.
func (j *Jaeger) WaitTraces(t testing.TB, service string, want, spans int, within time.Duration) []Trace {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := j.FindTraces(t, service)
		complete := len(got) == want
		for _, tr := range got {
			complete = complete && len(tr.Spans) == spans
		}
		if complete {
			return got
		}
		if time.Now().After(deadline) {
			var counts []string
			for _, tr := range got {
				counts = append(counts, fmt.Sprintf("%s:%d", tr.TraceID, len(tr.Spans)))
			}
			t.Fatalf("service %s: %d traces (%s), want %d with %d spans each", service, len(got), strings.Join(counts, " "), want, spans)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
