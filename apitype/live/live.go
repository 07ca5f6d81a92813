// Package live holds the answers of the socket API's live routes (POST
// /v1/decode, POST /v1/dump): apitype's types plus the map decoder's
// hmapdecode.Result and the symbolizer's goroutines, which is why they are
// not in apitype itself (that one imports nothing of this module). Like
// apitype, one definition each: package inspect declares its results as
// aliases of these, package client decodes them.
package live

import (
	"github.com/mapsentry/mapsentry/apitype"
	"github.com/mapsentry/mapsentry/hmapdecode"
	"github.com/mapsentry/mapsentry/symbolizer"
)

// DecodeResult is the answer of POST /v1/decode.
type DecodeResult struct {
	Process apitype.Process    `json:"process"`
	Freeze  apitype.Freeze     `json:"freeze"`
	Map     *hmapdecode.Result `json:"map"`
	// TypeCandidates are the binary's map types whose geometry fits, when
	// no type was given and more than one fits (the first few, named).
	TypeCandidates []apitype.TypeCandidate `json:"type_candidates,omitempty"`
	// Copy is what was copied while the process was held, and the time
	// before the stop and after the resume.
	Copy *apitype.Copy `json:"copy,omitempty"`
}

// DumpResult is the answer of POST /v1/dump.
type DumpResult struct {
	Process    apitype.Process        `json:"process"`
	Freeze     apitype.Freeze         `json:"freeze"`
	Goroutines []symbolizer.Goroutine `json:"goroutines"`
	Threads    []symbolizer.Thread    `json:"threads,omitempty"`
	Truncated  bool                   `json:"truncated,omitempty"`
	Errors     []string               `json:"errors,omitempty"`
	// Copy is what was copied while the process was held, and the time
	// before the stop and after the resume.
	Copy *apitype.Copy `json:"copy,omitempty"`
}
