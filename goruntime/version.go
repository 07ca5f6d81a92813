package goruntime

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrUnsupported is returned for a Go version, architecture or offset this
// package has no facts for. Callers branch on it to refuse work rather than
// guess.
var ErrUnsupported = errors.New("unsupported Go runtime")

// Supported Go minor versions (Go 1.N).
const (
	MinMinor = 19
	MaxMinor = 27
)

// Version is a parsed Go release version with its non-default experiments.
type Version struct {
	Major, Minor, Patch int
	// Experiments lists GOEXPERIMENT names recorded in the version string
	// ("go1.24.0 X:noswissmap", "go1.27.3-X:mapsplitgroup") or in the
	// GOEXPERIMENT build setting; a leading "no" means disabled.
	Experiments []string
	Raw         string
}

func (v Version) String() string {
	if v.Raw != "" {
		return v.Raw
	}
	return fmt.Sprintf("go%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// HasExperiment reports whether the named GOEXPERIMENT is recorded.
func (v Version) HasExperiment(name string) bool {
	for _, e := range v.Experiments {
		if e == name {
			return true
		}
	}
	return false
}

// ParseVersion parses a runtime version string as found in buildinfo or in
// runtime.buildVersion. goexperiment is the GOEXPERIMENT build setting, or "".
func ParseVersion(s, goexperiment string) (Version, error) {
	v := Version{Raw: s}
	rest, ok := strings.CutPrefix(s, "go")
	if !ok {
		return v, fmt.Errorf("parse Go version %q: no go prefix: %w", s, ErrUnsupported)
	}
	// Experiments: " X:a,b" (1.24/1.25) or "-X:a,b" (1.26+).
	if i := strings.Index(rest, "X:"); i > 0 {
		for _, e := range strings.Split(rest[i+2:], ",") {
			if e = strings.TrimSpace(e); e != "" {
				v.Experiments = append(v.Experiments, e)
			}
		}
		rest = strings.TrimRight(rest[:i], " -")
	}
	for _, e := range strings.Split(goexperiment, ",") {
		if e = strings.TrimSpace(e); e != "" && !v.HasExperiment(e) {
			v.Experiments = append(v.Experiments, e)
		}
	}
	// Pre-releases ("go1.27rc1") carry no patch number.
	for _, sep := range []string{"rc", "beta"} {
		if i := strings.Index(rest, sep); i > 0 {
			rest = rest[:i]
		}
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) < 2 {
		return v, fmt.Errorf("parse Go version %q: want goMAJOR.MINOR: %w", s, ErrUnsupported)
	}
	var err error
	if v.Major, err = strconv.Atoi(parts[0]); err != nil {
		return v, fmt.Errorf("parse Go version %q: major: %w", s, ErrUnsupported)
	}
	if v.Minor, err = strconv.Atoi(parts[1]); err != nil {
		return v, fmt.Errorf("parse Go version %q: minor: %w", s, ErrUnsupported)
	}
	if len(parts) == 3 {
		if v.Patch, err = strconv.Atoi(parts[2]); err != nil {
			return v, fmt.Errorf("parse Go version %q: patch: %w", s, ErrUnsupported)
		}
	}
	return v, nil
}

// Supported reports whether v is a Go version this package has tables for.
func (v Version) Supported() error {
	if v.Major != 1 || v.Minor < MinMinor || v.Minor > MaxMinor {
		return fmt.Errorf("Go %s: supported are go1.%d to go1.%d: %w", v, MinMinor, MaxMinor, ErrUnsupported)
	}
	return nil
}
