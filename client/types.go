package client

import "github.com/mapsentry/mapsentry/apitype"

// Names this package had before the wire types moved to apitype, kept so
// callers need not change: each is the apitype type itself, not a copy.
type (
	Status       = apitype.Status
	Check        = apitype.Check
	Binary       = apitype.Binary
	ArmRequest   = apitype.ArmRequest
	ArmStatus    = apitype.ArmStatus
	MapOpRefusal = apitype.MapOpRefusal
	MapOpsState  = apitype.MapOpsState
	Disarmed     = apitype.Disarmed
)
