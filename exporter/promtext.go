package exporter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"
)

// Handler serves the metrics in the Prometheus text exposition format
// (version 0.0.4). The daemon mounts it at /metrics on its socket.
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if err := m.WriteText(r.Context(), &buf); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		_, _ = w.Write(buf.Bytes())
	})
}

// WriteText collects the metrics and writes them as Prometheus text.
func (m *Metrics) WriteText(ctx context.Context, w io.Writer) error {
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(ctx, &rm); err != nil {
		return fmt.Errorf("collect metrics: %w", err)
	}
	families := promFamilies(rm)
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(w, f); err != nil {
			return fmt.Errorf("encode metric %s: %w", f.GetName(), err)
		}
	}
	return nil
}

// promFamilies converts collected OTel metrics to Prometheus families,
// sorted by name. Only the aggregations this package creates are handled:
// int64 counters and gauges, float64 explicit-bucket histograms.
func promFamilies(rm metricdata.ResourceMetrics) []*dto.MetricFamily {
	var out []*dto.MetricFamily
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			name := promName(md.Name, md.Unit)
			f := &dto.MetricFamily{Help: proto.String(md.Description)}
			switch d := md.Data.(type) {
			case metricdata.Sum[int64]:
				f.Type = dto.MetricType_GAUGE.Enum()
				if d.IsMonotonic {
					f.Type = dto.MetricType_COUNTER.Enum()
					name += "_total"
				}
				for _, p := range d.DataPoints {
					mt := &dto.Metric{Label: promLabels(p.Attributes)}
					if d.IsMonotonic {
						mt.Counter = &dto.Counter{Value: proto.Float64(float64(p.Value))}
					} else {
						mt.Gauge = &dto.Gauge{Value: proto.Float64(float64(p.Value))}
					}
					f.Metric = append(f.Metric, mt)
				}
			case metricdata.Gauge[int64]:
				f.Type = dto.MetricType_GAUGE.Enum()
				for _, p := range d.DataPoints {
					f.Metric = append(f.Metric, &dto.Metric{
						Label: promLabels(p.Attributes),
						Gauge: &dto.Gauge{Value: proto.Float64(float64(p.Value))},
					})
				}
			case metricdata.Histogram[float64]:
				f.Type = dto.MetricType_HISTOGRAM.Enum()
				for _, p := range d.DataPoints {
					h := &dto.Histogram{
						SampleCount: proto.Uint64(p.Count),
						SampleSum:   proto.Float64(p.Sum),
					}
					// OTel counts per bucket; Prometheus buckets are cumulative.
					var cum uint64
					for i, bound := range p.Bounds {
						cum += p.BucketCounts[i]
						h.Bucket = append(h.Bucket, &dto.Bucket{
							UpperBound:      proto.Float64(bound),
							CumulativeCount: proto.Uint64(cum),
						})
					}
					h.Bucket = append(h.Bucket, &dto.Bucket{
						UpperBound:      proto.Float64(math.Inf(1)),
						CumulativeCount: proto.Uint64(p.Count),
					})
					f.Metric = append(f.Metric, &dto.Metric{Label: promLabels(p.Attributes), Histogram: h})
				}
			default:
				continue
			}
			f.Name = proto.String(name)
			if len(f.Metric) > 0 {
				out = append(out, f)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func promName(name, unit string) string {
	n := strings.ReplaceAll(name, ".", "_")
	if unit == "s" {
		n += "_seconds"
	}
	return n
}

func promLabels(set attribute.Set) []*dto.LabelPair {
	var labels []*dto.LabelPair
	for _, kv := range set.ToSlice() { // sorted by key
		labels = append(labels, &dto.LabelPair{
			Name:  proto.String(strings.ReplaceAll(string(kv.Key), ".", "_")),
			Value: proto.String(kv.Value.Emit()),
		})
	}
	return labels
}
