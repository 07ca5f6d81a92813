package exporter

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"
)

// metricsSink is an OTLP metrics receiver on loopback that records the
// metric names it is sent.
type metricsSink struct {
	colmetricpb.UnimplementedMetricsServiceServer
	mu    sync.Mutex
	names map[string]bool
}

func (s *metricsSink) Export(_ context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				s.names[m.Name] = true
			}
		}
	}
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

func TestMetricsPushedOverOTLP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := &metricsSink{names: map[string]bool{}}
	srv := grpc.NewServer()
	colmetricpb.RegisterMetricsServiceServer(srv, sink)
	go srv.Serve(l)
	defer srv.Stop()

	cfg := DefaultConfig()
	cfg.Endpoint = l.Addr().String()
	reader, err := NewOTLPMetricReader(context.Background(), cfg, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(reader)
	if err != nil {
		t.Fatal(err)
	}
	m.CrashCaptured(sampleCrash(crashID(1), time.Now()))
	// Shutdown flushes the periodic reader once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for _, name := range []string{metricCrashes, metricFreeze, metricCapture, metricBinaries, metricQueueDepth} {
		if !sink.names[name] {
			t.Errorf("%s not pushed; got %v", name, sink.names)
		}
	}
}
