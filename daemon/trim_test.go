package daemon

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFileKB is this process's resident file-backed memory.
func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssFile:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// The test binary is a Go binary like the daemon: dropping its image's
// pages shrinks its resident file memory, and it runs on (its code and
// read-only data are mapped again as it touches them).
func TestDropImagePages(t *testing.T) {
	before := rssFileKB(t)
	n, err := dropImagePages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKB(t)
	if n < 2 {
		t.Errorf("dropped %d mappings of the test binary, want its code and read-only data (2+)", n)
	}
	if after >= before {
		t.Errorf("RssFile %d kB before, %d kB after: nothing dropped", before, after)
	}
	// Still runs: code and tables come back on use.
	if s := strings.Repeat("x", 3) + strconv.Itoa(42); s != "xxx42" {
		t.Fatal(s)
	}
	t.Logf("RssFile %d kB → %d kB (%d mappings)", before, after, n)
}
