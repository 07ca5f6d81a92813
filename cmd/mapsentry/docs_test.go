package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

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
