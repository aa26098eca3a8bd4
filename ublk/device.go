package ublk

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/ublk/internal/uapi"
)

// Options configure a device. Zero values mean the defaults.
type Options struct {
	// ID is the device number N wanted for /dev/ublkbN; nil lets the kernel
	// choose.
	ID *int
	// Queues is the number of hardware queues (default: CPUs, at most 8; the
	// kernel clamps it to the CPU count).
	Queues int
	// Depth is the number of tags per queue (default 128, at most 4096).
	Depth int
	// MaxIO is the largest request in bytes (default 512 KiB; a multiple of
	// the page size).
	MaxIO int
	// NoUserCopy uses buffer addresses even when the kernel offers USER_COPY.
	NoUserCopy bool
	// NoRecovery creates the device without USER_RECOVERY: it goes away when
	// the server dies instead of waiting for Recover.
	NoRecovery bool
	// Logger receives errors from the data path (default slog.Default()).
	Logger *slog.Logger
}

const (
	defaultDepth     = 128
	defaultMaxIO     = 512 << 10
	maxDefaultQueues = 8
)

func (o *Options) fill() error {
	if o.Queues == 0 {
		o.Queues = min(runtime.NumCPU(), maxDefaultQueues)
	}
	if o.Depth == 0 {
		o.Depth = defaultDepth
	}
	if o.MaxIO == 0 {
		o.MaxIO = defaultMaxIO
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.Queues < 1 || o.Queues > uapi.MaxNrQueues:
		return fmt.Errorf("ublk: queues %d out of range 1..%d", o.Queues, uapi.MaxNrQueues)
	case o.Depth < 1 || o.Depth > uapi.MaxQueueDepth:
		return fmt.Errorf("ublk: depth %d out of range 1..%d", o.Depth, uapi.MaxQueueDepth)
	case o.MaxIO < 4096 || o.MaxIO > 1<<uapi.IOBufBits || o.MaxIO%os.Getpagesize() != 0:
		return fmt.Errorf("ublk: max I/O %d must be a multiple of the page size between 4 KiB and 32 MiB", o.MaxIO)
	case o.ID != nil && (*o.ID < 0 || *o.ID >= 1<<20):
		return fmt.Errorf("ublk: device id %d out of range", *o.ID)
	}
	return nil
}

// Device is a live ublk block device served from a disk.Disk.
type Device struct {
	ctrl *control
	char *os.File // /dev/ublkcN, opened once (a second open gets EBUSY)
	id   uint32
	info uapi.DevInfo
	disk disk.Disk
	opts Options
	log  *slog.Logger
	size int64 // device size in bytes (sectors × 512)

	queues  []*queue
	queueWG sync.WaitGroup
	done    chan struct{} // closed when every queue has exited

	closeOnce sync.Once
	closeErr  error
}

// Start creates a ublk device serving d and returns once /dev/ublkbN exists.
// A read-only d gives a read-only device.
func Start(d disk.Disk, opts Options) (*Device, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	c, err := openControl()
	if err != nil {
		return nil, err
	}
	dev := &Device{ctrl: c, disk: d, opts: opts, log: opts.Logger, done: make(chan struct{})}
	if err := dev.create(); err != nil {
		c.close()
		return nil, err
	}
	return dev, nil
}

func (dev *Device) create() error {
	c := dev.ctrl
	id := uint32(anyID)
	if dev.opts.ID != nil {
		id = uint32(*dev.opts.ID)
	}
	// state and ublksrv_pid stay 0: 6.12 stores whatever it is given.
	info := uapi.DevInfo{
		NrHwQueues:    uint16(dev.opts.Queues),
		QueueDepth:    uint16(dev.opts.Depth),
		MaxIOBufBytes: uint32(dev.opts.MaxIO),
		DevID:         id, // must equal the ctrl cmd's dev_id (docs/ublk-protocol.md §1.2)
		Flags:         requestFlags(c.features, &dev.opts),
	}
	if err := c.addDev(&info); err != nil {
		return err
	}
	// The kernel answers with what it granted: queues clamped to the CPU
	// count, max_io_buf_bytes rounded down to the page size, flags masked.
	// Everything below sizes itself from this answer, never from opts.
	if err := checkGranted(&info); err != nil {
		dev.id = info.DevID
		dev.delete()
		return err
	}
	dev.id, dev.info = info.DevID, info
	dev.log = dev.log.With("ublk", dev.id)
	dev.log.Debug("ublk: device added", "queues", info.NrHwQueues, "depth", info.QueueDepth,
		"max_io", info.MaxIOBufBytes, "flags", fmt.Sprintf("%#x", info.Flags), "features", fmt.Sprintf("%#x", c.features))

	if err := dev.openChar(); err != nil {
		dev.delete()
		return err
	}
	p := dev.params()
	if testHook.badParams {
		p.Basic.LogicalBSShift = 8 // below 512 bytes: every kernel refuses it
	}
	if !testHook.skipSetParams {
		if err := c.setParams(dev.id, p); err != nil {
			dev.abort()
			return err
		}
	}
	if err := dev.startQueues(); err != nil {
		dev.abort()
		return err
	}
	// START_DEV blocks until every tag is fetched and the partition scan has
	// been served by the queues, which are running by now.
	if err := c.simple(uapi.CmdStartDev, dev.id, uint64(os.Getpid())); err != nil {
		dev.abort()
		return err
	}
	go dev.reap()
	return nil
}

// Recover takes over device id, whose previous server died, serving d. The
// device must have been created with USER_RECOVERY; I/O queued while it had
// no server is served once Recover returns.
func Recover(id int, d disk.Disk, opts Options) (*Device, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	c, err := openControl()
	if err != nil {
		return nil, err
	}
	dev := &Device{ctrl: c, disk: d, opts: opts, log: opts.Logger.With("ublk", id), id: uint32(id), done: make(chan struct{})}
	if err := dev.recover(); err != nil {
		c.close()
		return nil, err
	}
	return dev, nil
}

func (dev *Device) recover() error {
	c := dev.ctrl
	info, err := c.devInfo(dev.id)
	if err != nil {
		return err
	}
	if info.Flags&uapi.FCmdIoctlEncode != 0 {
		c.ioctlCodes = true
	}
	if info.Flags&uapi.FUserRecovery == 0 {
		return fmt.Errorf("ublk: device %d was created without user recovery", dev.id)
	}
	// The old server must be gone: wait for the kernel to notice (6.1 polls
	// every 5 s) and for the old /dev/ublkcN to be closed.
	deadline := time.Now().Add(15 * time.Second)
	for info.State == uapi.StateLive {
		if time.Now().After(deadline) {
			return fmt.Errorf("ublk: device %d still has a live server (pid %d)", dev.id, info.SrvPID)
		}
		time.Sleep(100 * time.Millisecond)
		if info, err = c.devInfo(dev.id); err != nil {
			return err
		}
	}
	if info.State != uapi.StateQuiesced && info.State != uapi.StateFailIO {
		return fmt.Errorf("ublk: device %d is %s, not waiting for recovery", dev.id, stateName(info.State))
	}
	dev.info = info
	for {
		err = c.simple(uapi.CmdStartUserRecovery, dev.id, 0)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	p, err := c.getParams(dev.id)
	if err != nil {
		return err
	}
	dev.size = int64(p.Basic.DevSectors) << uapi.SectorShift
	if dev.size > dev.disk.Size() {
		return fmt.Errorf("ublk: device %d is %d bytes, the stack only %d", dev.id, dev.size, dev.disk.Size())
	}
	if err := dev.openChar(); err != nil {
		return err
	}
	if err := dev.startQueues(); err != nil {
		dev.stopQueues()
		dev.char.Close()
		return err
	}
	if err := c.simple(uapi.CmdEndUserRecovery, dev.id, uint64(os.Getpid())); err != nil {
		// The device stays quiesced; a later Recover may still take it.
		dev.stopQueues()
		dev.char.Close()
		return err
	}
	go dev.reap()
	return nil
}

// testHook makes the kernel refuse a creation step, so tests can check that
// every failure path tears down what was made. Tests only.
var testHook struct {
	badParams     bool // SET_PARAMS fails (-EINVAL)
	skipSetParams bool // START_DEV fails: no BASIC params (-EINVAL)
}

// checkGranted rejects an ADD_DEV answer the server cannot work with.
func checkGranted(info *uapi.DevInfo) error {
	switch {
	case info.NrHwQueues == 0 || info.QueueDepth == 0:
		return fmt.Errorf("ublk: device %d granted %d queues of depth %d", info.DevID, info.NrHwQueues, info.QueueDepth)
	case info.MaxIOBufBytes < 1<<uapi.SectorShift || info.MaxIOBufBytes > 1<<uapi.IOBufBits:
		return fmt.Errorf("ublk: device %d granted max I/O of %d bytes", info.DevID, info.MaxIOBufBytes)
	case info.Flags&(uapi.FNeedGetData|uapi.FSupportZeroCopy|uapi.FUnprivilegedDev|uapi.FZoned) != 0:
		// Never asked for; serving them needs a different data path.
		return fmt.Errorf("ublk: device %d granted unrequested flags %#x", info.DevID, info.Flags)
	}
	return nil
}

func (dev *Device) openChar() error {
	path := dev.CharPath()
	var err error
	// devtmpfs creates the node at once; udev may lag (docs/ublk-protocol.md §2.1).
	for i := 0; i < 100; i++ {
		dev.char, err = os.OpenFile(path, os.O_RDWR, 0)
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("ublk: %w", err)
	}
	return nil
}

func (dev *Device) params() *uapi.Params {
	dev.size = dev.disk.Size() &^ (1<<uapi.SectorShift - 1)
	var p uapi.Params
	p.Len = uint32(len(uapi.Bytes(&p)))
	p.Types = uapi.ParamTypeBasic
	p.Basic = uapi.ParamBasic{
		LogicalBSShift:  9,
		PhysicalBSShift: 12,
		IOOptShift:      12,
		IOMinShift:      9,
		MaxSectors:      dev.info.MaxIOBufBytes >> uapi.SectorShift,
		DevSectors:      uint64(dev.size) >> uapi.SectorShift,
	}
	if dev.disk.ReadOnly() {
		p.Basic.Attrs = uapi.AttrReadOnly
	} else {
		// A writable upper buffers writes until Flush: ask the kernel for
		// FLUSH requests (and to emulate FUA with them).
		p.Basic.Attrs = uapi.AttrVolatileCache
		p.Types |= uapi.ParamTypeDiscard
		p.Discard = uapi.ParamDiscard{
			DiscardGranularity:    4096,
			MaxDiscardSectors:     1 << 21, // 1 GiB per request
			MaxWriteZeroesSectors: 1 << 21,
			MaxDiscardSegments:    1,
		}
	}
	return &p
}

// startQueues starts every queue goroutine and waits until each has
// submitted its FETCHes and is in its completion loop.
func (dev *Device) startQueues() error {
	n := int(dev.info.NrHwQueues)
	dev.queues = make([]*queue, n)
	errs := make(chan error, n)
	for q := range n {
		qu := &queue{dev: dev, id: q, depth: int(dev.info.QueueDepth), efd: -1}
		dev.queues[q] = qu
		dev.queueWG.Add(1)
		go func() {
			defer dev.queueWG.Done()
			qu.run(errs)
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// stopQueues makes every queue goroutine exit, for error paths before the
// device has started: without STOP_DEV the kernel never aborts the FETCHes,
// so each queue closes its ring, which cancels them (6.12: cancelable
// uring_cmd).
func (dev *Device) stopQueues() {
	for _, q := range dev.queues {
		if q != nil {
			q.quit()
		}
	}
	dev.queueWG.Wait()
}

// abort undoes a partly created device: STOP_DEV (aborts the FETCHes of a
// device that got as far as starting), queue exit, then DEL_DEV.
func (dev *Device) abort() {
	if err := dev.ctrl.simple(uapi.CmdStopDev, dev.id, 0); err != nil {
		dev.log.Debug("ublk: STOP_DEV while aborting", "err", err)
	}
	dev.stopQueues()
	if dev.char != nil {
		dev.char.Close()
	}
	dev.delete()
}

func (dev *Device) delete() {
	if err := dev.ctrl.simple(uapi.CmdDelDev, dev.id, 0); err != nil {
		dev.log.Warn("ublk: DEL_DEV", "err", err)
	}
}

// reap closes done when every queue has exited, which happens when the
// device is stopped (by Close, by `obdfs ublk detach`, or by the kernel).
func (dev *Device) reap() {
	dev.queueWG.Wait()
	close(dev.done)
}

// ID is the device number N.
func (dev *Device) ID() int { return int(dev.id) }

// BlockPath is /dev/ublkbN.
func (dev *Device) BlockPath() string { return fmt.Sprintf("/dev/ublkb%d", dev.id) }

// CharPath is /dev/ublkcN.
func (dev *Device) CharPath() string { return fmt.Sprintf("/dev/ublkc%d", dev.id) }

// Flags are the negotiated UBLK_F_* flags.
func (dev *Device) Flags() uint64 { return dev.info.Flags }

// UserCopy reports whether data moves by pread/pwrite on /dev/ublkcN.
func (dev *Device) UserCopy() bool { return dev.info.Flags&uapi.FUserCopy != 0 }

// Done is closed when the device has stopped serving (Close, a detach from
// another process, or the kernel stopping it).
func (dev *Device) Done() <-chan struct{} { return dev.done }

// Close stops the device, waits for in-flight I/O and deletes it. It does not
// close the disk. The block device must not be open or mounted, or STOP_DEV
// waits for it (docs/ublk-protocol.md §3.2).
func (dev *Device) Close() error {
	dev.closeOnce.Do(func() {
		select {
		case <-dev.done:
			// Already stopped (a detach from another process): only DEL_DEV
			// is left to do.
		default:
			// Queues keep serving during STOP_DEV: del_gendisk may write back.
			if err := dev.ctrl.simple(uapi.CmdStopDev, dev.id, 0); err != nil {
				// Without STOP_DEV nothing aborts the tags and the queues
				// would serve forever: end them here instead (closing a
				// ring cancels its FETCHes on 6.7+; 6.1–6.6 notice the
				// exited threads within 5 s).
				dev.closeErr = err
				for _, q := range dev.queues {
					q.quit()
				}
			}
			<-dev.done
		}
		dev.char.Close()
		// If the queues ended without a STOP_DEV (their threads died, or
		// STOP_DEV failed), 6.1–6.6 leave the device LIVE until their 5 s
		// monitor notices, and a DEL_DEV sent before that hangs
		// (docs/ublk-protocol.md §3.3).
		dev.waitNotLive(10 * time.Second)
		// DEL_DEV waits for every reference (ublkc fd, descriptor mmaps),
		// all released above.
		// ENODEV: a detach that gave up waiting deleted it already.
		if err := dev.ctrl.simple(uapi.CmdDelDev, dev.id, 0); err != nil && !errors.Is(err, unix.ENODEV) && dev.closeErr == nil {
			dev.closeErr = err
		}
		dev.ctrl.close()
	})
	return dev.closeErr
}

// waitNotLive polls the device state until it is no longer LIVE, for at
// most d. A stopped device is DEAD at once, so this costs one GET_DEV_INFO.
func (dev *Device) waitNotLive(d time.Duration) {
	if _, err := waitState(dev.ctrl, dev.id, d, 100*time.Millisecond); err != nil && !errors.Is(err, unix.ENODEV) {
		dev.log.Debug("ublk: waiting for the device to leave LIVE", "err", err)
	}
}

// waitState polls GET_DEV_INFO every poll until the device is not LIVE or d
// has passed, and returns the last answer.
func waitState(c *control, id uint32, d, poll time.Duration) (uapi.DevInfo, error) {
	deadline := time.Now().Add(d)
	for {
		di, err := c.devInfo(id)
		if err != nil || di.State != uapi.StateLive || !time.Now().Before(deadline) {
			return di, err
		}
		time.Sleep(poll)
	}
}

// Info describes a ublk device as the kernel reports it.
type Info struct {
	ID     int
	State  string
	Queues int
	Depth  int
	MaxIO  int
	PID    int
	Flags  uint64
	Size   int64 // bytes; 0 if unknown
}

func stateName(s uint16) string {
	switch s {
	case uapi.StateDead:
		return "dead"
	case uapi.StateLive:
		return "live"
	case uapi.StateQuiesced:
		return "quiesced"
	case uapi.StateFailIO:
		return "fail-io"
	}
	return fmt.Sprintf("state-%d", s)
}

func infoOf(c *control, id uint32) (Info, error) {
	di, err := c.devInfo(id)
	if err != nil {
		return Info{}, err
	}
	inf := Info{ID: int(di.DevID), State: stateName(di.State), Queues: int(di.NrHwQueues),
		Depth: int(di.QueueDepth), MaxIO: int(di.MaxIOBufBytes), PID: int(di.SrvPID), Flags: di.Flags}
	if p, err := c.getParams(id); err == nil && p.Types&uapi.ParamTypeBasic != 0 {
		inf.Size = int64(p.Basic.DevSectors) << uapi.SectorShift
	}
	return inf, nil
}

// List reports every ublk device (found under /sys/class/ublk-char).
func List() ([]Info, error) {
	c, err := openControl()
	if err != nil {
		return nil, err
	}
	defer c.close()
	ents, err := os.ReadDir("/sys/class/ublk-char")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("ublk: %w", err)
	}
	var out []Info
	for _, e := range ents {
		var id uint32
		if _, err := fmt.Sscanf(e.Name(), "ublkc%d", &id); err != nil {
			continue
		}
		inf, err := infoOf(c, id)
		if err != nil {
			if errors.Is(err, unix.ENODEV) {
				continue // deleted meanwhile
			}
			return out, err
		}
		out = append(out, inf)
	}
	return out, nil
}

// Features is the kernel's GET_FEATURES answer (0 before 6.5).
func Features() (uint64, error) {
	c, err := openControl()
	if err != nil {
		return 0, err
	}
	defer c.close()
	return c.features, nil
}

// Detach stops device id from any process. If its server is alive, the
// server deletes the device once its queues drain, and Detach waits up to
// timeout for that; if no server is alive, Detach deletes it. Two DEL_DEVs
// must never race: on 6.1 they deadlock, each holding a device reference
// while waiting for the other's to go.
func Detach(id int, timeout time.Duration) error {
	c, err := openControl()
	if err != nil {
		return err
	}
	defer c.close()
	return detach(c, uint32(id), timeout, 100*time.Millisecond, pidAlive)
}

func pidAlive(pid int) bool { return pid > 0 && unix.Kill(pid, 0) != unix.ESRCH }

// detach is Detach on an open control, with the liveness test and the poll
// interval as parameters for the host tests.
func detach(c *control, id uint32, timeout, poll time.Duration, alive func(pid int) bool) error {
	di, err := c.devInfo(id)
	if err != nil {
		return err
	}
	if di.Flags&uapi.FCmdIoctlEncode != 0 {
		c.ioctlCodes = true
	}
	deadline := time.Now().Add(timeout)
	pid := int(di.SrvPID)
	serverAlive := alive(pid)
	if !serverAlive && di.State == uapi.StateLive {
		// 6.1–6.6 notice a dead server only from a 5 s monitor, and a
		// DEL_DEV (or STOP_DEV) sent before that hangs
		// (docs/ublk-protocol.md §3.3): wait
		// until it is not LIVE.
		if _, err := waitState(c, id, time.Until(deadline), poll); err != nil {
			return err
		}
	}
	if err := c.simple(uapi.CmdStopDev, id, 0); err != nil {
		return err
	}
	for serverAlive && alive(pid) && time.Now().Before(deadline) {
		if _, err := c.devInfo(id); errors.Is(err, unix.ENODEV) {
			return nil // the server deleted it
		} else if err != nil {
			return err
		}
		time.Sleep(poll)
	}
	if _, err := c.devInfo(id); errors.Is(err, unix.ENODEV) {
		return nil
	}
	// No server left to delete it (or it did not within timeout): do it here.
	if err := c.simple(uapi.CmdDelDev, id, 0); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}
