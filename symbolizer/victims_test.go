package symbolizer

import (
	"os"
	"path/filepath"
	"strings"
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
	// link is how it is linked: "" (the Go linker), "external" (cgo,
	// -linkmode=external: gcc), "pie", "extpie"; trimpath adds -trimpath.
	link     string
	trimpath bool
}

func (v variant) String() string {
	s := v.toolchain
	if v.link != "" {
		s += "-" + v.link
	}
	if v.trimpath {
		s += "-trimpath"
	}
	if v.stripped {
		s += "-stripped"
	}
	return s
}

// buildArgs are v's go build arguments and environment.
func (v variant) buildArgs() (env, extra []string) {
	ld := ""
	if v.stripped {
		ld = "-s -w"
	}
	if v.link == "external" || v.link == "extpie" {
		env = append(env, "CGO_ENABLED=1")
		ld += " -linkmode=external"
	}
	if v.link == "pie" || v.link == "extpie" {
		extra = append(extra, "-buildmode=pie")
	}
	if v.trimpath {
		extra = append(extra, "-trimpath")
	}
	if ld != "" {
		extra = append(extra, "-ldflags="+strings.TrimSpace(ld))
	}
	return env, extra
}

func allVariants() []variant {
	var out []variant
	for _, tc := range testenv.Toolchains() {
		out = append(out, variant{toolchain: tc}, variant{toolchain: tc, stripped: true})
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
	env, extra := v.buildArgs()
	testenv.BuildGo(t, "testdata/victim", v.toolchain, out, env, extra...)
	builds.done[v.String()] = out
	return out
}
