package ublk

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/uring"
	"github.com/obdfs/obdfs/ublk/internal/uapi"
)

// ControlPath is the ublk control device.
const ControlPath = "/dev/ublk-control"

// ErrNoUblk is returned when the kernel has no ublk driver.
var ErrNoUblk = errors.New("ublk: " + ControlPath + " not present (ublk_drv not loaded?)")

// anyID asks ADD_DEV to pick a free device id.
const anyID = 0xFFFFFFFF

// control is an open /dev/ublk-control with its SQE128 ring. Commands are
// serialised: one is in flight at a time.
type control struct {
	mu   sync.Mutex
	f    *os.File
	ring *uring.Ring
	buf  []byte // mmap'd: the kernel reads/writes it from an io-wq worker (docs/ublk-protocol.md §1.1)

	// features is the GET_FEATURES answer, 0 if the kernel predates it (< 6.5).
	features uint64
	// ioctlCodes: the kernel takes ioctl-encoded codes (known from
	// GET_FEATURES or from a device's CMD_IOCTL_ENCODE flag).
	ioctlCodes bool

	// send issues one command with the first n bytes of buf as its buffer
	// and returns cqe.res; raw on a real kernel, a fake one in host tests.
	send func(op uint32, id uint32, n int, data uint64) (int32, error)
	seq  uint64 // user_data of the last command sent
}

func openControl() (*control, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoUblk
		}
		return nil, fmt.Errorf("ublk: %w", err)
	}
	ring, err := uring.New(4, uring.SetupSQE128)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ublk: control ring: %w", err)
	}
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		ring.Close()
		f.Close()
		return nil, fmt.Errorf("ublk: control buffer: %w", err)
	}
	c := &control{f: f, ring: ring, buf: buf}
	c.send = c.raw
	c.probeFeatures()
	return c, nil
}

// probeFeatures asks GET_FEATURES. It exists from 6.5 and only in its exact
// ioctl form; older kernels answer -ENODEV (6.1: no such device 0), or
// -EOPNOTSUPP/-ENOTSUPP (6.4, or 6.1 when device 0 exists). docs/ublk-protocol.md §1.3. A
// kernel that answers takes ioctl codes for everything.
func (c *control) probeFeatures() {
	clear(c.buf[:8])
	if res, err := c.send(uapi.CtrlIoctl(uapi.CmdGetFeatures), 0, 8, 0); err == nil && res >= 0 {
		c.features = le64(c.buf)
		c.ioctlCodes = true
	}
}

func (c *control) close() {
	c.ring.Close()
	unix.Munmap(c.buf)
	c.f.Close()
}

// raw sends one control command with code op for device id, with the first
// n bytes of c.buf as its buffer and data as data[0]; it returns cqe.res.
// Caller holds c.mu or owns c exclusively.
func (c *control) raw(op uint32, id uint32, n int, data uint64) (int32, error) {
	cmd := uapi.CtrlCmd{DevID: id, QueueID: 0xFFFF, Len: uint16(n), Data: data}
	if n > 0 {
		cmd.Addr = uapi.Ptr(c.buf)
	}
	// A command whose wait failed may still complete later: each command
	// carries its own sequence number and stale completions are dropped.
	c.seq++
	if err := c.ring.PrepURingCmd(int(c.f.Fd()), op, uapi.Bytes(&cmd), c.seq); err != nil {
		return 0, err
	}
	for {
		cqe, err := c.ring.WaitOne()
		if err != nil {
			return 0, err
		}
		if cqe.UserData == c.seq {
			return cqe.Res, nil
		}
	}
}

// enotsupp is the kernel-internal ENOTSUPP (524) some kernels return for an
// unknown command; x/sys/unix has no name for it.
const enotsupp = 524

// pickErr chooses which of two failed answers to report when a command was
// tried in both encodings: the legacy answer, unless it only says that
// legacy codes are off (CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=n, 6.4+), in which
// case the ioctl answer is the kernel's real verdict.
func pickErr(legacy, ioctl int32) int32 {
	if legacy == -int32(unix.EOPNOTSUPP) || legacy == -enotsupp {
		return ioctl
	}
	return legacy
}

var cmdNames = map[uint32]string{
	uapi.CmdGetQueueAffinity: "GET_QUEUE_AFFINITY", uapi.CmdGetDevInfo: "GET_DEV_INFO",
	uapi.CmdAddDev: "ADD_DEV", uapi.CmdDelDev: "DEL_DEV", uapi.CmdStartDev: "START_DEV",
	uapi.CmdStopDev: "STOP_DEV", uapi.CmdSetParams: "SET_PARAMS", uapi.CmdGetParams: "GET_PARAMS",
	uapi.CmdStartUserRecovery: "START_USER_RECOVERY", uapi.CmdEndUserRecovery: "END_USER_RECOVERY",
}

// CmdError is a control command the kernel refused.
type CmdError struct {
	Cmd   string
	DevID int
	Err   syscall.Errno
}

func (e *CmdError) Error() string {
	if e.DevID >= 0 {
		return fmt.Sprintf("ublk: %s on device %d: %v", e.Cmd, e.DevID, e.Err)
	}
	return fmt.Sprintf("ublk: %s: %v", e.Cmd, e.Err)
}

func (e *CmdError) Unwrap() error { return e.Err }

// cmd sends control command nr. in is copied into the buffer before, and
// out (which may be in) filled from it after; size is the buffer length.
// With ioctl codes unknown, the ioctl form is tried first and the legacy
// number on any error: 6.1 answers ioctl codes with -ENODEV or -EOPNOTSUPP,
// not -EINVAL (docs/ublk-protocol.md §1.3).
func (c *control) cmd(nr uint32, id uint32, in, out []byte, size int, data uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if size > len(c.buf) {
		return fmt.Errorf("ublk: control buffer too small for %d bytes", size)
	}
	try := func(op uint32) int32 {
		clear(c.buf[:size])
		copy(c.buf, in)
		res, err := c.send(op, id, size, data)
		if err != nil {
			return -int32(unix.EIO)
		}
		return res
	}
	var res int32
	if c.ioctlCodes {
		res = try(uapi.CtrlIoctl(nr))
	} else {
		// Encoding unknown (6.4 without GET_FEATURES, or < 6.4): legacy
		// first, since before 6.4 it is the only one.
		res = try(nr)
		if res < 0 {
			if r2 := try(uapi.CtrlIoctl(nr)); r2 >= 0 {
				res = r2
			} else {
				res = pickErr(res, r2)
			}
		}
	}
	if res < 0 {
		devID := int(id)
		if id == anyID {
			devID = -1
		}
		name := cmdNames[nr]
		if name == "" {
			name = fmt.Sprintf("command %#x", nr)
		}
		return &CmdError{Cmd: name, DevID: devID, Err: syscall.Errno(-res)}
	}
	copy(out, c.buf[:size])
	return nil
}

// addDev creates a device; info is sent and replaced by the kernel's answer.
// With the encoding known from GET_FEATURES only the ioctl form is sent;
// otherwise ioctl first, then legacy on any error: 6.1 answers the ioctl
// form with -ENODEV, not -EINVAL (docs/ublk-protocol.md §1.3, §3.1).
func (c *control) addDev(info *uapi.DevInfo) error {
	c.mu.Lock()
	id := info.DevID
	ops := []uint32{uapi.CtrlIoctl(uapi.CmdAddDev), uapi.CmdAddDev}
	if c.ioctlCodes {
		ops = ops[:1]
	}
	var res, first int32
	var err error
	for i, op := range ops {
		clear(c.buf[:64])
		copy(c.buf, uapi.Bytes(info))
		res, err = c.send(op, id, 64, 0)
		if err == nil && res >= 0 {
			break
		}
		if err == nil && i == 0 {
			first = res
		}
	}
	if err == nil && res < 0 && len(ops) == 2 {
		res = pickErr(res, first)
	}
	if err == nil && res >= 0 {
		copy(uapi.Bytes(info), c.buf[:64])
		if info.Flags&uapi.FCmdIoctlEncode != 0 {
			c.ioctlCodes = true
		}
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ublk: ADD_DEV: %w", err)
	}
	if res < 0 {
		err := &CmdError{Cmd: "ADD_DEV", DevID: -1, Err: syscall.Errno(-res)}
		if res == -int32(unix.EACCES) && os.Geteuid() == 0 {
			// Up to 6.6 every device counts against the module parameter
			// ublks_max (default 64); later kernels count only unprivileged
			// ones.
			return fmt.Errorf("%w (too many ublk devices? see ublk_drv's ublks_max parameter)", err)
		}
		return err
	}
	return nil
}

func (c *control) devInfo(id uint32) (uapi.DevInfo, error) {
	var info uapi.DevInfo
	err := c.cmd(uapi.CmdGetDevInfo, id, nil, uapi.Bytes(&info), 64, 0)
	return info, err
}

func (c *control) setParams(id uint32, p *uapi.Params) error {
	return c.cmd(uapi.CmdSetParams, id, uapi.Bytes(p), nil, int(p.Len), 0)
}

func (c *control) getParams(id uint32) (uapi.Params, error) {
	var p uapi.Params
	p.Len = uint32(len(uapi.Bytes(&p)))
	err := c.cmd(uapi.CmdGetParams, id, uapi.Bytes(&p), uapi.Bytes(&p), int(p.Len), 0)
	return p, err
}

// requestFlags is the UBLK_F_* set asked for at ADD_DEV, given the
// GET_FEATURES answer (0 before 6.5) and the options. Kernels up to 7.0 mask
// unknown flags rather than refuse them, but a known feature set is honoured
// anyway so that nothing depends on that.
func requestFlags(features uint64, o *Options) uint64 {
	var f uint64
	// USER_COPY exists from 6.5, the first kernel with GET_FEATURES; without
	// an answer it cannot be there.
	if !o.NoUserCopy && features&uapi.FUserCopy != 0 {
		f |= uapi.FUserCopy
	}
	if !o.NoRecovery {
		// USER_RECOVERY and REISSUE exist since 6.1 (the oldest kernel we
		// serve). REISSUE: I/O in flight when the server dies is requeued
		// for the next server rather than failed. 6.13+ refuses REISSUE
		// without USER_RECOVERY and REISSUE together with FAIL_IO, so the
		// pair is only ever sent together.
		rec := uint64(uapi.FUserRecovery | uapi.FUserRecoveryReissue)
		if features == 0 || features&rec == rec {
			f |= rec
		}
	}
	return f
}

func (c *control) simple(nr uint32, id uint32, data uint64) error {
	return c.cmd(nr, id, nil, nil, 0, data)
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
