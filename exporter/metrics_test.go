package exporter

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mapsentry/mapsentry/report"
)

// scrape GETs /metrics from m's handler and parses it with the Prometheus
// text parser.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); expfmt.ResponseFormat(resp.Header).FormatType() != expfmt.TypeTextPlain {
		t.Errorf("Content-Type %q is not Prometheus text", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func findMetric(f *dto.MetricFamily, labels map[string]string) *dto.Metric {
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		for k, v := range labels {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

func counterValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m := findMetric(fams[name], labels)
	if m == nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func TestMetricsPrometheusText(t *testing.T) {
	m, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m.CrashCaptured(sampleCrash(crashID(1), now))
	m.CrashCaptured(sampleCrash(crashID(2), now))
	panicked := sampleCrash(crashID(3), now)
	panicked.Fatal.Kind = report.KindUnrecoveredPanic
	panicked.Process.Exe = "/usr/bin/billing"
	panicked.Freeze.FrozenNS = 1_500_000_000
	m.CrashCaptured(panicked)
	m.SetBinariesWatched(7)
	m.SetProbesAttached(28)
	m.AddEventsLost("crash", 3)
	m.exportQueueDepth(2)
	m.exportFailed()
	m.exportDropped(DropMaxAge)

	fams := scrape(t, m)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mapsentry_crashes_total", map[string]string{"kind": "map_concurrent_write", "exe": "orders-api"}, 2},
		{"mapsentry_crashes_total", map[string]string{"kind": "unrecovered_panic", "exe": "billing"}, 1},
		{"mapsentry_binaries_watched", nil, 7},
		{"mapsentry_probes_attached", nil, 28},
		{"mapsentry_events_lost_total", map[string]string{"source": "crash"}, 3},
		{"mapsentry_export_queue_depth", nil, 2},
		{"mapsentry_export_failures_total", nil, 1},
		{"mapsentry_export_dropped_total", map[string]string{"reason": "max_age"}, 1},
	}
	for _, c := range checks {
		if got := counterValue(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for name, want := range map[string]struct {
		count uint64
		le    float64
		below uint64
	}{
		"mapsentry_freeze_duration_seconds":  {3, 0.005, 2}, // 4.5ms, 4.5ms, 1.5s
		"mapsentry_capture_duration_seconds": {3, 0.005, 3}, // 3.2ms each
	} {
		f := fams[name]
		if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
			t.Errorf("%s missing or not a histogram", name)
			continue
		}
		h := f.Metric[0].Histogram
		if h.GetSampleCount() != want.count {
			t.Errorf("%s count %d, want %d", name, h.GetSampleCount(), want.count)
		}
		for _, b := range h.Bucket {
			if b.GetUpperBound() == want.le && b.GetCumulativeCount() != want.below {
				t.Errorf("%s bucket le=%v has %d, want %d", name, want.le, b.GetCumulativeCount(), want.below)
			}
		}
	}
	var nilMetrics *Metrics
	nilMetrics.CrashCaptured(panicked) // must not panic
}
