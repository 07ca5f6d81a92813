package exporter

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

// jaeger is a real Jaeger v2 all-in-one started by scripts/run-jaeger.sh on
// free loopback ports, so it never clashes with a user's Jaeger on the
// default ones.
type jaeger struct {
	root                          string // repository root
	bin                           string
	dir                           string
	otlpGRPC, otlpHTTP, query, qg int
	cmd                           *exec.Cmd
	log                           string
}

// jaegerBinary returns the cached Jaeger binary, building it with
// scripts/build-jaeger.sh when missing (several minutes on a cold cache;
// CI builds it once before the tests).
func jaegerBinary(t *testing.T) (root, bin string) {
	t.Helper()
	testenv.RequirePrivileged(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
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

func freePorts(t *testing.T, n int) []int {
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

// newJaeger reserves ports; start starts the process.
func newJaeger(t *testing.T) *jaeger {
	t.Helper()
	root, bin := jaegerBinary(t)
	p := freePorts(t, 4)
	dir := t.TempDir()
	return &jaeger{root: root, bin: bin, dir: dir, otlpGRPC: p[0], otlpHTTP: p[1], query: p[2], qg: p[3], log: filepath.Join(dir, "jaeger.log")}
}

func (j *jaeger) grpcEndpoint() string { return fmt.Sprintf("127.0.0.1:%d", j.otlpGRPC) }
func (j *jaeger) httpEndpoint() string { return fmt.Sprintf("127.0.0.1:%d", j.otlpHTTP) }
func (j *jaeger) queryURL() string     { return fmt.Sprintf("http://127.0.0.1:%d", j.query) }

func (j *jaeger) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(j.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// The script writes the loopback-only config; Jaeger is started here
	// so that the PID killed in Cleanup is Jaeger's own.
	script := exec.Command(filepath.Join(j.root, "scripts", "run-jaeger.sh"), "--write-config")
	script.Env = append(os.Environ(),
		"JAEGER_DIR="+j.dir,
		"JAEGER_OTLP_GRPC_PORT="+strconv.Itoa(j.otlpGRPC),
		"JAEGER_OTLP_HTTP_PORT="+strconv.Itoa(j.otlpHTTP),
		"JAEGER_QUERY_HTTP_PORT="+strconv.Itoa(j.query),
		"JAEGER_QUERY_GRPC_PORT="+strconv.Itoa(j.qg),
	)
	out, err := script.Output()
	if err != nil {
		t.Fatalf("scripts/run-jaeger.sh --write-config: %v", err)
	}
	cmd := exec.Command(j.bin, "--config", "file:"+strings.TrimSpace(string(out)))
	cmd.Stdout, cmd.Stderr = logf, logf
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	j.cmd = cmd
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stopping := time.Now()
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			b, _ := os.ReadFile(j.log)
			t.Logf("jaeger pid %d ignored SIGTERM for 10s; killing it. log tail:\n%s", pid, tail(string(b), 3000))
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
		took := time.Since(stopping)
		t.Logf("jaeger pid %d stopped in %v", pid, took.Round(time.Millisecond))
		if t.Failed() || took > 3*time.Second {
			b, _ := os.ReadFile(j.log)
			t.Logf("jaeger log (tail):\n%s", tail(string(b), 4000))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(j.log)
			t.Fatalf("jaeger exited during start-up: %v\n%s", err, tail(string(b), 4000))
		default:
		}
		if j.ready() {
			t.Logf("jaeger pid %d ready in %v (otlp grpc %s, query %s)", pid, time.Since(started).Round(time.Millisecond), j.grpcEndpoint(), j.queryURL())
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("jaeger not ready after 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (j *jaeger) ready() bool {
	for _, addr := range []string{j.grpcEndpoint(), j.httpEndpoint()} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	resp, err := http.Get(j.queryURL() + "/api/services")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Jaeger's query HTTP API (/api/traces), the JSON the UI reads.
type jTraces struct {
	Data   []jTrace `json:"data"`
	Errors []struct {
		Msg string `json:"msg"`
	} `json:"errors"`
}

type jTrace struct {
	TraceID   string              `json:"traceID"`
	Spans     []jSpan             `json:"spans"`
	Processes map[string]jProcess `json:"processes"`
}

type jSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64  `json:"startTime"` // µs since the epoch
	Duration  int64  `json:"duration"`  // µs
	Tags      []jKV  `json:"tags"`
	Logs      []jLog `json:"logs"`
	ProcessID string `json:"processID"`
}

type jLog struct {
	Timestamp int64 `json:"timestamp"`
	Fields    []jKV `json:"fields"`
}

type jProcess struct {
	ServiceName string `json:"serviceName"`
	Tags        []jKV  `json:"tags"`
}

type jKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

func kvs(tags []jKV) map[string]any {
	m := make(map[string]any, len(tags))
	for _, kv := range tags {
		m[kv.Key] = kv.Value
	}
	return m
}

func (j *jaeger) get(t *testing.T, path string, q url.Values) jTraces {
	t.Helper()
	u := j.queryURL() + path
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
	var out jTraces
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

// findTraces lists the traces of service in the last hour.
func (j *jaeger) findTraces(t *testing.T, service string) []jTrace {
	t.Helper()
	now := time.Now()
	return j.get(t, "/api/traces", url.Values{
		"service": {service},
		"start":   {strconv.FormatInt(now.Add(-time.Hour).UnixMicro(), 10)},
		"end":     {strconv.FormatInt(now.Add(time.Minute).UnixMicro(), 10)},
		"limit":   {"1000"},
	}).Data
}

func (j *jaeger) trace(t *testing.T, traceID string) (jTrace, bool) {
	t.Helper()
	d := j.get(t, "/api/traces/"+traceID, nil).Data
	if len(d) == 0 {
		return jTrace{}, false
	}
	return d[0], true
}

// waitTraces polls until service has want traces, each with spans spans.
func (j *jaeger) waitTraces(t *testing.T, service string, want, spans int, within time.Duration) []jTrace {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := j.findTraces(t, service)
		complete := len(got) == want
		for _, tr := range got {
			complete = complete && len(tr.Spans) == spans
		}
		if complete {
			return got
		}
		if time.Now().After(deadline) {
			counts := []string{}
			for _, tr := range got {
				counts = append(counts, fmt.Sprintf("%s:%d", tr.TraceID, len(tr.Spans)))
			}
			t.Fatalf("service %s: %d traces (%s), want %d with %d spans each", service, len(got), strings.Join(counts, " "), want, spans)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
