package lsmt

import (
	"errors"
	"fmt"
)

var (
	// ErrFormat means a file is not a valid LSMT file of the expected kind.
	ErrFormat = errors.New("lsmt: invalid format")
	// ErrAlignment means an offset or length is not a multiple of 512 where the
	// format needs sectors.
	ErrAlignment = errors.New("lsmt: offset or length not 512-byte aligned")
	// ErrTooManyLayers means more than MaxLayers read-only layers were stacked.
	ErrTooManyLayers = errors.New("lsmt: too many layers")
	// ErrIndexTooLarge means an index exceeds MaxROIndexSize / MaxIndexSize.
	ErrIndexTooLarge = errors.New("lsmt: index too large")
	// ErrOrder means the uuid/parent_uuid chain of a layer stack is broken.
	ErrOrder = errors.New("lsmt: layers out of order")
	// ErrClosed means the layer was closed.
	ErrClosed = errors.New("lsmt: file closed")
	// ErrOutOfRange means an I/O reaches past the virtual size or the address
	// space of the format.
	ErrOutOfRange = errors.New("lsmt: offset out of range")
)

// FormatError says where a file violates the format. It unwraps to ErrFormat
// (and also to Err, e.g. ErrIndexTooLarge for oversized indexes).
type FormatError struct {
	File   string // name given when opening
	Offset int64  // byte offset of the faulty structure in File, -1 if none
	Field  string // e.g. "trailer.index_size", "index[12]"
	Msg    string
	Err    error // sentinel; ErrFormat when nil
}

func (e *FormatError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("lsmt %s: %s at offset %d: %s", e.File, e.Field, e.Offset, e.Msg)
	}
	return fmt.Sprintf("lsmt %s: %s: %s", e.File, e.Field, e.Msg)
}

// Unwrap reports ErrFormat and, when set, the more precise sentinel.
func (e *FormatError) Unwrap() []error {
	if e.Err != nil && e.Err != ErrFormat {
		return []error{ErrFormat, e.Err}
	}
	return []error{ErrFormat}
}

func formatErr(file string, off int64, field, format string, args ...any) *FormatError {
	return &FormatError{File: file, Offset: off, Field: field, Msg: fmt.Sprintf(format, args...)}
}
