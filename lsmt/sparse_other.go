//go:build !linux

package lsmt

import (
	"errors"
	"os"
)

// SEEK_DATA and SEEK_HOLE have these values on the BSDs, macOS and Solaris.
const (
	seekData = 3
	seekHole = 4
)

// punchHole is unsupported here: discards write zeros instead.
func punchHole(f *os.File, off, n int64) error { return errors.ErrUnsupported }
