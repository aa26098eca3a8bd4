package lsmt

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

const (
	seekData = unix.SEEK_DATA
	seekHole = unix.SEEK_HOLE
)

// punchHole deallocates [off, off+n) of f, keeping its size (overlaybd's
// trim: FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE). A filesystem that cannot
// punch holes gives errors.ErrUnsupported.
func punchHole(f *os.File, off, n int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if ferr == unix.EOPNOTSUPP || ferr == unix.ENOSYS {
		return errors.ErrUnsupported
	}
	if ferr != nil {
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: ferr}
	}
	return nil
}
