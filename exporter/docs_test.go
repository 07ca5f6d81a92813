package exporter

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestAttributesDocumented keeps docs/export.md in step with
// attributes.go: every mapsentry.* name used must be documented.
func TestAttributesDocumented(t *testing.T) {
	src, err := os.ReadFile("attributes.go")
	if err != nil {
		t.Fatal(err)
	}
	diag, err := os.ReadFile("diagnosis.go")
	if err != nil {
		t.Fatal(err)
	}
	src = append(src, diag...)
	doc, err := os.ReadFile("../docs/export.md")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`"(mapsentry\.[a-z_.]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(names) < 30 {
		t.Fatalf("found only %d mapsentry.* names in attributes.go", len(names))
	}
	for _, m := range names {
		name := strings.TrimSuffix(m[1], ".")
		if !strings.Contains(string(doc), "`"+name) {
			t.Errorf("%s is not documented in docs/export.md", m[1])
		}
	}
}
