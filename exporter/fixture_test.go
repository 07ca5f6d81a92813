package exporter

import (
	"fmt"
	"time"

	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/report"
	"github.com/mapsentry/mapsentry/symbolizer"
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

// withDetails adds what the capture finds when it fully succeeds: the
// decoded map, partners and goroutines.
func withDetails(c report.Crash) report.Crash {
	tomb := true
	c.Map = &report.Map{
		Addr:        0xc000112000,
		FoundBy:     "spill slots of internal/runtime/maps.(*Map).putSlowPath",
		MapFunction: "internal/runtime/maps.(*Map).putSlowPath",
		Op:          "assign",
		CallSite:    &symbolizer.Frame{Function: "main.(*Store).Put", File: "/src/orders/store.go", Line: 41},
		Result: &hmapdecode.Result{
			Addr: 0xc000112000, Layout: "swiss", GoType: "map[string]*main.Session", TypeSource: "descriptor",
			Count: 1234,
			Swiss: &hmapdecode.SwissHeader{Used: 1234, Seed: 0x5eed, DirPtr: 0xc000200000, DirLen: 4, GlobalDepth: 2, Writing: 1, TombstonePossible: &tomb},
			Flags: []string{"writing"},
			Stats: hmapdecode.Stats{EntriesFound: 1233},
			Anomalies: []hmapdecode.Anomaly{
				{Code: "used_mismatch", Severity: "error", Where: "header", Detail: "used=1234 but 1233 full slots"},
				{Code: "writing_flag_set", Severity: "info", Where: "header", Detail: "a writer was inside the map"},
			},
		},
	}
	c.Partners = []report.Partner{{
		Goid: 35, TID: 4251, Op: "assign", MapFunction: "internal/runtime/maps.(*Map).PutSlot",
		Function: "main.(*Store).Put", File: "/src/orders/store.go", Line: 41,
		Evidence: report.EvidenceFatalSameMap, Rank: 1, AgoNS: 15_000,
	}}
	c.Goroutines = []symbolizer.Goroutine{
		{
			ID: 34, Status: "running", Thread: 4250,
			Frames: []symbolizer.Frame{
				{Function: "internal/runtime/maps.fatal", File: "/usr/lib/go/src/runtime/panic.go", Line: 1058},
				{Function: "internal/runtime/maps.(*Map).putSlowPath", File: "/usr/lib/go/src/internal/runtime/maps/map.go", Line: 500},
				{Function: "main.(*Store).Put", File: "/src/orders/store.go", Line: 41},
				{Function: "main.handle", File: "/src/orders/main.go", Line: 77},
			},
			CreatedBy: &symbolizer.Frame{Function: "main.serve", File: "/src/orders/main.go", Line: 60},
			ParentID:  1,
		},
		{ID: 35, Status: "running", Thread: 4251, Frames: []symbolizer.Frame{{Function: "main.(*Store).Put", File: "/src/orders/store.go", Line: 41}}},
		{ID: 1, Status: "waiting", WaitReason: "IO wait", Frames: []symbolizer.Frame{{Function: "main.main", File: "/src/orders/main.go", Line: 30}}},
	}
	return c
}

// richView adds capture phase timings, which the report does not carry
// yet, to withDetails.
func richView(c report.Crash) crashView {
	v := fromReport(withDetails(c))
	v.Phases = []phaseView{
		{Name: spanMapDecode, Offset: 0, Duration: 1_100 * time.Microsecond},
		{Name: spanGoroutineDump, Offset: 1_100 * time.Microsecond, Duration: 1_700 * time.Microsecond},
	}
	return v
}

func crashID(i int) string { return fmt.Sprintf("%016x%08x", 0x18a0000000000000+i, i) }
