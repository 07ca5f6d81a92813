package exporter

import (
	"fmt"
	"time"

	"github.com/mapsentry/mapsentry/report"
)

// sampleCrash is a realistic concurrent-map-writes report as the daemon
// produces it today (schema 1): two threads hit the fatal path 40µs apart.
func sampleCrash(id string, t0 time.Time) report.Crash {
	exit := 2
	return report.Crash{
		Schema:     report.Schema,
		ID:         id,
		Host:       "build-host-1",
		CapturedAt: t0.Add(3 * time.Millisecond),
		Process: report.Process{
			PID:       4242,
			StartTime: 987654,
			Exe:       "/usr/local/bin/orders-api",
			BuildID:   "Zq3k_abc/def",
			Cmdline:   []string{"/usr/local/bin/orders-api", "-listen", "127.0.0.1:8080"},
			GoVersion: "go1.26.8",
			MapLayout: "swiss",
			Cgroup:    "/system.slice/orders-api.service",
			Unit:      "orders-api.service",
		},
		Fatal: report.Fatal{
			Message: "concurrent map writes",
			Kind:    report.KindMapConcurrentWrite,
			Events: []report.Event{
				{
					TID: 4250, Goid: 34, KTimeNS: 1_000_000_000, WallTime: t0,
					Function: "internal/runtime/maps.fatal", Message: "concurrent map writes",
					PC: 0x4a1b20, Caller: 0x4b2c30, CallerFunction: "internal/runtime/maps.(*Map).putSlowPath",
				},
				{
					TID: 4251, Goid: 35, KTimeNS: 1_000_040_000, WallTime: t0.Add(40 * time.Microsecond),
					Function: "internal/runtime/maps.fatal", Message: "concurrent map writes",
					PC: 0x4a1b20, Caller: 0x4b2d10, CallerFunction: "internal/runtime/maps.(*Map).PutSlot",
				},
			},
		},
		Freeze: report.Freeze{
			FrozenNS:            4_500_000,
			AllThreadsStopped:   true,
			AllThreadsStoppedNS: 300_000,
			Resumed:             true,
			ExitStatus:          &exit,
		},
		Capture: report.Capture{DurationNS: 3_200_000, BytesRead: 1 << 20},
	}
}

// richView adds what schema 1 does not carry yet (map, partners,
// goroutines, capture phases), as fromReport will fill it in.
func richView(c report.Crash) crashView {
	v := fromReport(c)
	v.Phases = []phaseView{
		{Name: spanGoroutineDump, Offset: 0, Duration: 1_900 * time.Microsecond},
		{Name: spanMapDecode, Offset: 1_900 * time.Microsecond, Duration: 1_100 * time.Microsecond},
	}
	v.Map = &mapView{
		Addr:   0xc000112000,
		GoType: "map[string]*main.Session",
		Layout: "swiss",
		Header: []field{
			{"used", uint32(1234)}, {"seed", uint64(0xdeadbeef)}, {"dir_len", 4}, {"global_depth", uint8(2)},
		},
		Flags:        []string{"writing"},
		EntriesFound: 1233,
		Anomalies: []anomalyView{
			{Code: "used_mismatch", Severity: "error", Where: "header", Detail: "used=1234 but 1233 full slots"},
			{Code: "writing_flag_set", Severity: "info", Where: "header", Detail: "a writer was inside the map"},
		},
	}
	v.Partners = []partnerView{{
		Goid: 35, TID: 4251, Op: "mapassign", Function: "main.(*Store).Put",
		File: "/src/orders/store.go", Line: 41, Evidence: "stack", Ago: 15 * time.Microsecond,
	}}
	v.Goroutines = []goroutineView{
		{
			ID: 34, Status: "running",
			Frames: []frameView{
				{"internal/runtime/maps.fatal", "/usr/lib/go/src/runtime/panic.go", 1058},
				{"internal/runtime/maps.(*Map).putSlowPath", "/usr/lib/go/src/internal/runtime/maps/map.go", 500},
				{"main.(*Store).Put", "/src/orders/store.go", 41},
				{"main.handle", "/src/orders/main.go", 77},
			},
			CreatedBy: &frameView{"main.serve", "/src/orders/main.go", 60},
			CreatorID: 1,
		},
		{ID: 35, Status: "running", Frames: []frameView{{"main.(*Store).Put", "/src/orders/store.go", 41}}},
		{ID: 1, Status: "IO wait", WaitReason: "", Frames: []frameView{{"main.main", "/src/orders/main.go", 30}}},
	}
	return v
}

func crashID(i int) string { return fmt.Sprintf("%016x%08x", 0x18a0000000000000+i, i) }
