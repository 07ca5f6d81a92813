package jaegertest

import (
	"encoding/json"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// FindTracesByTag lists the traces of service from the last hour whose
// spans carry the attribute key=value (Jaeger's tag search).
func (j *Jaeger) FindTracesByTag(t testing.TB, service, key, value string) []Trace {
	t.Helper()
	tags, _ := json.Marshal(map[string]string{key: value})
	now := time.Now()
	return j.get(t, "/api/traces", url.Values{
		"service": {service},
		"tags":    {string(tags)},
		"start":   {strconv.FormatInt(now.Add(-time.Hour).UnixMicro(), 10)},
		"end":     {strconv.FormatInt(now.Add(time.Minute).UnixMicro(), 10)},
		"limit":   {"1000"},
	}).Data
}
