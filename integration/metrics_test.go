package integration

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsOnSocket: the daemon serves Prometheus text at /metrics on its
// socket; it parses, and counts the crash it captured.
func TestMetricsOnSocket(t *testing.T) {
	startDaemonCheck(t)
	d := startDaemon(t, filepath.Join(shared.dir, "bin"), "")
	crashVictim(t, d, shared.victim(t, variants[0]), "writes")

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
	}}}
	var families map[string]bool
	waitFor(t, 10*time.Second, "crash counted in /metrics", func() bool {
		resp, err := hc.Get("http://mapsentry/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		mf, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("/metrics does not parse as Prometheus text: %v", err)
		}
		families = map[string]bool{}
		crashes := 0.0
		for name, f := range mf {
			families[name] = true
			if strings.HasPrefix(name, "mapsentry_crashes") {
				for _, m := range f.GetMetric() {
					crashes += m.GetCounter().GetValue()
				}
			}
		}
		return crashes >= 1
	})
	for _, want := range []string{"mapsentry_binaries_watched", "mapsentry_probes_attached", "mapsentry_freeze_duration"} {
		found := false
		for name := range families {
			found = found || strings.HasPrefix(name, want)
		}
		if !found {
			t.Errorf("no %s* family in /metrics (have %v)", want, families)
		}
	}
}
