package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Where a value came from, in rising precedence.
const (
	SourceDefault = "default"
	SourceFile    = "file"
	SourceConfD   = "conf.d"
	SourceEnv     = "env"
	SourceFlag    = "flag"
)

// Source is where one key's effective value came from: Kind is one of the
// Source* constants, Where the file, variable or flag ("" for a default).
type Source struct {
	Kind  string `json:"source"`
	Where string `json:"where,omitempty"`
}

func (s Source) String() string {
	if s.Where == "" {
		return s.Kind
	}
	return s.Kind + " " + s.Where
}

// Sources maps every key to the source of its effective value.
type Sources map[string]Source

// Setting is one key of the effective configuration.
type Setting struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
	Source
}

// Keys lists every configuration key, sorted.
func Keys() []string {
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Settings flattens c into one Setting per key, sorted by key. Durations
// are rendered as Go durations ("2s"), as they are written in files.
func (c Config) Settings(src Sources) []Setting {
	flat := map[string]any{}
	flatten("", reflect.ValueOf(c), flat)
	out := make([]Setting, 0, len(flat))
	for _, k := range Keys() {
		v, ok := flat[k]
		if !ok {
			continue
		}
		s, ok := src[k]
		if !ok {
			s = Source{Kind: SourceDefault}
		}
		out = append(out, Setting{Key: k, Value: redact(v), Source: s})
	}
	return out
}

// redact hides the values of map settings (OTLP headers carry tokens):
// the effective config says which headers are set, not what they hold.
func redact(v any) any {
	m, ok := v.(map[string]string)
	if !ok {
		return v
	}
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = "<redacted>"
	}
	return out
}

func flatten(prefix string, v reflect.Value, out map[string]any) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := t.Field(i).Tag.Get("mapstructure")
		if name == "" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		f := v.Field(i)
		switch {
		case f.Type() == reflect.TypeOf(time.Duration(0)):
			out[key] = time.Duration(f.Int()).String()
		case f.Kind() == reflect.Struct:
			flatten(key, f, out)
		case f.Kind() == reflect.Slice && f.IsNil():
			out[key] = []string{}
		default:
			out[key] = f.Interface()
		}
	}
}

// FormatValue renders a setting's value for a text listing.
func FormatValue(v any) string {
	if xs, ok := v.([]string); ok {
		return "[" + strings.Join(xs, " ") + "]"
	}
	return fmt.Sprint(v)
}
