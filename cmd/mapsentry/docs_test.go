package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/mapsentry/mapsentry/daemon/api"
	"github.com/mapsentry/mapsentry/daemon/config"
)

// readDocs returns README.md and every docs/*.md, by path.
func readDocs(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{}
	for _, p := range append(paths, "../../README.md") {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		docs[strings.TrimPrefix(p, "../../")] = string(b)
	}
	return docs
}

func documented(docs map[string]string, needle string) bool {
	for _, d := range docs {
		if strings.Contains(d, needle) {
			return true
		}
	}
	return false
}

// TestEveryConfigKeyDocumented: each key of the typed config appears, in
// backquotes, in README.md or docs/*.md.
func TestEveryConfigKeyDocumented(t *testing.T) {
	docs := readDocs(t)
	for _, k := range config.Keys() {
		if !documented(docs, "`"+k+"`") {
			where := "docs/config.md's table"
			if strings.HasPrefix(k, "export.") {
				where = "docs/export.md"
			}
			t.Errorf("config key %s is documented nowhere: add a row for `%s` (default, meaning) to %s", k, k, where)
		}
	}
}

// TestEveryRouteDocumented: each route of the socket API is a row of
// docs/security.md's route table with the access it needs (read or write),
// so the doc says who may do what. /metrics is added by daemon.Run itself.
func TestEveryRouteDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	routes := append(newWireServer("unused", newWire()).Routes(), api.Route{Pattern: "GET /metrics", Access: api.Read})
	for _, r := range routes {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "| `"+r.Pattern+"` |") })
		if i < 0 {
			t.Errorf("route %s (%s) is not in docs/security.md's route table: add a row `| `%s` | %s | ... |`",
				r.Pattern, r.Access, r.Pattern, r.Access)
			continue
		}
		if !strings.Contains(lines[i], "| "+r.Access.String()+" |") {
			t.Errorf("docs/security.md: route %s needs %s access, its row says otherwise: %s", r.Pattern, r.Access, lines[i])
		}
	}
}

// TestEveryCommandDocumented: each command of the CLI (but hidden ones and
// cobra's own) appears as `mapsentry NAME` in README.md or docs/*.md.
func TestEveryCommandDocumented(t *testing.T) {
	docs := readDocs(t)
	walk(newRoot(), func(cmd *cobra.Command) {
		if !cmd.HasParent() || cmd.Hidden || cmd.Name() == "help" || cmd.Name() == "completion" {
			return
		}
		if !documented(docs, cmd.CommandPath()) {
			t.Errorf("command %q is documented nowhere: say what it does in README.md (the CLI list) or docs/*.md",
				cmd.CommandPath())
		}
	})
}
