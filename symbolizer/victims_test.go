package symbolizer

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mapsentry/mapsentry/internal/testenv"
)

// victimBuilds caches victim binaries across the tests of one run: each
// (toolchain, stripped) pair is built once.
type victimBuilds struct {
	mu   sync.Mutex
	dir  string
	done map[string]string
}

var builds = &victimBuilds{done: map[string]string{}}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "symbolizer-victims-")
	if err != nil {
		panic(err)
	}
	builds.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type variant struct {
	toolchain string
	stripped  bool
}

func (v variant) String() string {
	if v.stripped {
		return v.toolchain + "-stripped"
	}
	return v.toolchain
}

func allVariants() []variant {
	var out []variant
	for _, tc := range testenv.Toolchains() {
		out = append(out, variant{tc, false}, variant{tc, true})
	}
	return out
}

// victim builds (once) testdata/victim with v and returns the binary path.
func victim(t testing.TB, v variant) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if p, ok := builds.done[v.String()]; ok {
		return p
	}
	out := filepath.Join(builds.dir, "victim-"+v.String())
	var extra []string
	if v.stripped {
		extra = append(extra, "-ldflags=-s -w")
	}
	testenv.BuildGo(t, "testdata/victim", v.toolchain, out, nil, extra...)
	builds.done[v.String()] = out
	return out
}
