package exporter

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"

	"github.com/mapsentry/mapsentry/report"
)

// Diagnosis attributes on the root span (docs/export.md).
const (
	attrSignature         = "mapsentry.crash.signature"
	attrDiagnosis         = "mapsentry.diagnosis"
	attrDiagnosisStrength = "mapsentry.diagnosis.evidence_strength"
	attrDiagnosisEvidence = "mapsentry.diagnosis.evidence"
	attrMapVariable       = "mapsentry.map.variable"
	attrMapVariableSource = "mapsentry.map.variable_source"
	attrMapAllocSite      = "mapsentry.map.alloc_site"
	attrMapSyncMap        = "mapsentry.map.sync_map"
	attrMapHolders        = "mapsentry.map.holders"
)

// diagnosisAttributes are the diagnosis's attributes, first on the root
// span: the sentence is what to read, the signature what to search by.
func diagnosisAttributes(c report.Crash) []attribute.KeyValue {
	attrs := []attribute.KeyValue{attribute.String(attrSignature, report.SignatureOf(&c))}
	d := c.Diagnosis
	if d == nil {
		return attrs
	}
	if d.Sentence != "" {
		attrs = append(attrs,
			attribute.String(attrDiagnosis, d.Sentence),
			attribute.String(attrDiagnosisStrength, d.Strength))
	}
	if d.Evidence != "" {
		attrs = append(attrs, attribute.String(attrDiagnosisEvidence, d.Evidence))
	}
	if v := d.Variable; v != nil && v.Name != "" {
		attrs = append(attrs, attribute.String(attrMapVariable, v.Name), attribute.String(attrMapVariableSource, v.Source))
	}
	if v := d.Variable; v != nil && v.AllocSite != nil {
		attrs = append(attrs, attribute.String(attrMapAllocSite, v.AllocSite.At()))
	}
	if d.SyncMap != "" {
		attrs = append(attrs, attribute.String(attrMapSyncMap, d.SyncMap))
	}
	if len(d.Holders) > 0 {
		attrs = append(attrs, attribute.Int(attrMapHolders, len(d.Holders)))
	}
	return attrs
}

// rootSpanName says the diagnosis in a few words, without goroutine ids
// or lines, so that it stays one name per signature in Jaeger's operation
// list: "map_concurrent_write main.ledger: main.deposit / main.withdraw".
// Without a diagnosis it is the fatal kind.
func rootSpanName(c report.Crash) string {
	name := spanName(c.Fatal.Kind)
	d := c.Diagnosis
	if d == nil || len(d.Paths) == 0 {
		return name
	}
	if v := d.Variable; v != nil && v.Name != "" && v.Name != report.UnknownStripped {
		name += " " + v.Name
	}
	fns := make([]string, 0, len(d.Paths))
	for _, p := range d.Paths {
		fns = append(fns, p.Function)
	}
	return name + ": " + strings.Join(fns, " / ")
}
