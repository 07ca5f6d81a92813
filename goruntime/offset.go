package goruntime

import "fmt"

// Offset is a byte offset inside a runtime struct. The zero value is a valid
// offset (field at +0), so an unknown one is the explicit Unknown.
type Offset int64

// Unknown marks a field whose offset no table nor DWARF gave.
const Unknown Offset = -1

// Known reports whether the offset was found.
func (o Offset) Known() bool { return o >= 0 }

// Get returns the offset or an ErrUnsupported error naming the field.
func (o Offset) Get(field string) (uint64, error) {
	if o < 0 {
		return 0, fmt.Errorf("offset of %s: %w", field, ErrUnsupported)
	}
	return uint64(o), nil
}
