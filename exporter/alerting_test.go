package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mapsentry/mapsentry/internal/testenv"
	"github.com/mapsentry/mapsentry/report"
)

// promtool is built by scripts/deps.sh (scripts/build-promtool.sh).
func promtool(t *testing.T) string {
	t.Helper()
	p, _ := filepath.Abs("../.cache/bin/promtool")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	testenv.Unavailable(t, "promtool not built (make deps runs scripts/build-promtool.sh)")
	return ""
}

// TestPrometheusRules: the shipped rules pass promtool's checks and their
// unit tests.
func TestPrometheusRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "mapsentry.rules.yml"},
		{"test", "rules", "mapsentry.rules.test.yml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "../deploy/prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// exposed records one of everything and returns the metric family names
// served on /metrics.
func exposed(t *testing.T) map[string]bool {
	t.Helper()
	m, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	c := report.Crash{ID: "x", Fatal: report.Fatal{Kind: report.KindMapConcurrentWrite},
		Process: report.Process{Exe: "/srv/bank"}, Freeze: report.Freeze{FrozenNS: int64(time.Millisecond), DeadlineHit: true},
		Capture:   report.Capture{DurationNS: int64(time.Millisecond), Errors: []string{"x"}},
		Diagnosis: &report.Diagnosis{Signature: "s1-0123456789abcdef"}}
	m.CrashCaptured(c)
	m.CrashSuppressed(c.Fatal.Kind, c.Process.Exe, "s1-0123456789abcdef")
	m.AddEventsLost("crash", 1)
	m.AddDiscoveryErrors("attach", 1)
	m.exported()
	m.exportFailed()
	m.exportDropped("max_age")
	var buf bytes.Buffer
	if err := m.WriteText(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(buf.String(), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
	}
	if !names["mapsentry_crashes_total"] || !strings.Contains(buf.String(), `signature="s1-0123456789abcdef"`) {
		t.Fatalf("/metrics lacks the signature-labelled crash counter:\n%s", buf.String())
	}
	return names
}

var metricName = regexp.MustCompile(`\b(mapsentry_[a-z_]+|mapsentry:[a-z_:0-9]+)\b`)

// TestDashboardAndRulesMetricsExist: the Grafana dashboard is valid JSON
// with queries, and every metric it and the rules query is served on
// /metrics (or recorded by the rules).
func TestDashboardAndRulesMetricsExist(t *testing.T) {
	names := exposed(t)
	rules, err := os.ReadFile("../deploy/prometheus/mapsentry.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, m := range regexp.MustCompile(`record: (\S+)`).FindAllStringSubmatch(string(rules), -1) {
		recorded[m[1]] = true
	}
	raw, err := os.ReadFile("../deploy/grafana/mapsentry.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) < 5 {
		t.Fatalf("dashboard title %q uid %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Title == "" || p.Type == "" || len(p.Targets) == 0 {
			t.Errorf("panel %+v: no title, type or query", p)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	check := func(what, expr string) {
		found := metricName.FindAllString(expr, -1)
		for _, n := range found {
			if !names[n] && !recorded[n] {
				t.Errorf("%s queries %s, which /metrics does not serve", what, n)
			}
		}
	}
	for _, e := range exprs {
		if len(metricName.FindAllString(e, -1)) == 0 && !strings.Contains(e, "up{") {
			t.Errorf("dashboard query %q uses no mapsentry metric", e)
		}
		check("dashboard", e)
	}
	for _, m := range regexp.MustCompile(`expr: (.+)`).FindAllStringSubmatch(string(rules), -1) {
		check("rules", m[1])
	}
	var served []string
	for n := range names {
		served = append(served, n)
	}
	sort.Strings(served)
	t.Logf("served: %s", strings.Join(served, " "))
}
