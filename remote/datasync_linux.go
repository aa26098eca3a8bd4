package remote

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync makes f's data durable without forcing its metadata out
// (fdatasync: the size and mtime of a cache file need not survive a crash).
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
