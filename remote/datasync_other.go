//go:build !linux

package remote

import "os"

// datasync falls back to a full fsync where fdatasync does not exist.
func datasync(f *os.File) error { return f.Sync() }
