package probes

import (
	"path/filepath"
	"strings"
)

// Scope decides which executables get probes, by path. A pattern is a
// filepath.Match glob, or a directory prefix when it ends in "/**" (every
// file below it). An empty Include means everything.
type Scope struct {
	Include []string
	Exclude []string
}

// Allows reports whether the executable at path is in scope.
func (s Scope) Allows(path string) bool {
	path = strings.TrimSuffix(path, " (deleted)")
	for _, p := range s.Exclude {
		if match(p, path) {
			return false
		}
	}
	if len(s.Include) == 0 {
		return true
	}
	for _, p := range s.Include {
		if match(p, path) {
			return true
		}
	}
	return false
}

func match(pattern, path string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/**"); ok {
		return strings.HasPrefix(path, dir+"/")
	}
	ok, err := filepath.Match(pattern, path)
	return err == nil && ok
}
