package loopdev

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// getFree asks /dev/loop-control for a free device number, creating a
// device if none is free.
func getFree() (int, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer ctl.Close()
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return 0, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
	}
	return n, nil
}

// fileID names a backing file the way the loop driver records it.
type fileID struct{ dev, ino uint64 }

func statID(st *unix.Stat_t) fileID { return fileID{dev: st.Dev, ino: st.Ino} }

// backingID is the backing file of the bound device loopFd; ENXIO when
// the device is unbound (or being unbound).
func backingID(loopFd int) (fileID, error) {
	info, err := unix.IoctlLoopGetStatus64(loopFd)
	if err != nil {
		return fileID{}, fmt.Errorf("LOOP_GET_STATUS64: %w", err)
	}
	return fileID{dev: info.Device, ino: info.Inode}, nil
}

type config struct {
	backing   int
	id        fileID
	name      string
	readOnly  bool
	directIO  bool
	autoclear bool
	blockSize uint32
}

func (c config) flags() uint32 {
	var fl uint32
	if c.readOnly {
		fl |= unix.LO_FLAGS_READ_ONLY
	}
	if c.autoclear {
		fl |= unix.LO_FLAGS_AUTOCLEAR
	}
	if c.directIO {
		fl |= unix.LO_FLAGS_DIRECT_IO
	}
	return fl
}

func (c config) info() unix.LoopInfo64 {
	var info unix.LoopInfo64
	info.Flags = c.flags()
	copy(info.File_name[:len(info.File_name)-1], c.name)
	return info
}

// errNoConfigure means the kernel predates LOOP_CONFIGURE.
var errNoConfigure = errors.New("LOOP_CONFIGURE not supported")

// configure binds the backing file in one step (Linux 5.8+).
func configure(loopFd int, c config) error {
	lc := unix.LoopConfig{Fd: uint32(c.backing), Size: c.blockSize, Info: c.info()}
	err := unix.IoctlLoopConfigure(loopFd, &lc)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOTTY):
		return errNoConfigure
	case errors.Is(err, unix.EINVAL):
		// Kernels before 5.8 answer unknown loop ioctls with EINVAL; so
		// does a current kernel for a bad argument. The legacy path tells
		// the two apart by failing again, on the exact step.
		return errNoConfigure
	}
	return fmt.Errorf("LOOP_CONFIGURE: %w", err)
}

// configureLegacy is the pre-5.8 sequence. The device is bound after
// LOOP_SET_FD, so any later failure clears it again.
func configureLegacy(loopFd int, c config) (err error) {
	if err := unix.IoctlSetInt(loopFd, unix.LOOP_SET_FD, c.backing); err != nil {
		return fmt.Errorf("LOOP_SET_FD: %w", err)
	}
	defer func() {
		if err != nil {
			unix.IoctlSetInt(loopFd, unix.LOOP_CLR_FD, 0)
		}
	}()
	info := c.info()
	// LOOP_SET_STATUS64 can set only AUTOCLEAR and PARTSCAN; read-only
	// comes from the backing fd's mode and direct I/O from its own ioctl.
	info.Flags &= unix.LOOP_SET_STATUS_SETTABLE_FLAGS
	if err := unix.IoctlLoopSetStatus64(loopFd, &info); err != nil {
		return fmt.Errorf("LOOP_SET_STATUS64: %w", err)
	}
	if c.blockSize != 0 {
		if err := unix.IoctlSetInt(loopFd, unix.LOOP_SET_BLOCK_SIZE, int(c.blockSize)); err != nil {
			return fmt.Errorf("LOOP_SET_BLOCK_SIZE %d: %w", c.blockSize, err)
		}
	}
	if c.directIO {
		if err := unix.IoctlSetInt(loopFd, unix.LOOP_SET_DIRECT_IO, 1); err != nil {
			return fmt.Errorf("LOOP_SET_DIRECT_IO: %w", err)
		}
	}
	return nil
}

// clear unbinds the device (deferred by the kernel to the last close when
// others have it open).
func clearFd(loopFd int) error {
	if err := unix.IoctlSetInt(loopFd, unix.LOOP_CLR_FD, 0); err != nil {
		return fmt.Errorf("LOOP_CLR_FD: %w", err)
	}
	return nil
}
