// Package uring is a minimal io_uring built on raw io_uring_setup and
// io_uring_enter syscalls and three mmaps (docs/ublk-protocol.md §4), shared by
// the ublk server and the FUSE-over-io_uring transport (fusefs): URING_CMD
// submissions on SQE128 or plain rings, plus the few opcodes the servers and
// the tests need (NOP, READ).
//
// A Ring is not safe for concurrent use: one goroutine owns it. For ublk and
// FUSE queue rings that goroutine must also be locked to its OS thread
// (docs/ublk-protocol.md §2.8): the kernel completes their commands in the
// submitting task's context.
package uring

import (
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Setup flags (io_uring_params.flags). docs/ublk-protocol.md §4.2.
const (
	SetupCQSize       = 1 << 3
	SetupCoopTaskrun  = 1 << 8
	SetupSQE128       = 1 << 10
	SetupSingleIssuer = 1 << 12
	SetupDeferTaskrun = 1 << 13
)

// Opcodes.
const (
	OpNop      = 0
	OpRead     = 22
	OpURingCmd = 46
)

const (
	enterGetEvents = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	// SQE byte offsets (docs/ublk-protocol.md §4.4).
	sqeOpcode   = 0
	sqeFd       = 4
	sqeOff      = 8 // also cmd_op (u32) + __pad1 (u32) for URING_CMD
	sqeAddr     = 16
	sqeLen      = 24
	sqeUserData = 32
	// SQECmdOffset is where URING_CMD payloads (ublk ctrl/io cmd) start.
	SQECmdOffset = 48
)

// maxBusyRetries bounds the EAGAIN/EBUSY retries of one Submit.
const maxBusyRetries = 1000

// ErrRingFull is returned when no SQE slot is free; submit first.
var ErrRingFull = errors.New("uring: submission queue full")

type params struct {
	SQEntries    uint32
	CQEntries    uint32
	Flags        uint32
	SQThreadCPU  uint32
	SQThreadIdle uint32
	Features     uint32
	WQFd         uint32
	Resv         [3]uint32
	SQOff        sqOffsets
	CQOff        cqOffsets
}

type sqOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type cqOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

// CQE is one completion.
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// Ring is one io_uring instance.
type Ring struct {
	fd      int
	sqeSize int

	sqRing, cqRing, sqeMem []byte

	sqHead, sqTail *uint32
	sqMask         uint32
	sqEntries      uint32
	sqArray        []uint32
	sqTailLocal    uint32

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []CQE
}

// New creates a ring with at least entries SQ slots (rounded up to a power of
// two by the kernel). flags are Setup* bits; SetupSQE128 gives 128-byte SQEs.
func New(entries uint32, flags uint32) (*Ring, error) {
	var p params
	p.Flags = flags
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup(%d, flags %#x): %w", entries, flags, errno)
	}
	r := &Ring{fd: int(fd), sqeSize: 64}
	if flags&SetupSQE128 != 0 {
		r.sqeSize = 128
	}
	if err := r.mapRings(&p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Ring) mapRings(p *params) error {
	const prot = unix.PROT_READ | unix.PROT_WRITE
	const flags = unix.MAP_SHARED | unix.MAP_POPULATE
	var err error
	sqLen := int(p.SQOff.Array + p.SQEntries*4)
	if r.sqRing, err = unix.Mmap(r.fd, offSQRing, sqLen, prot, flags); err != nil {
		return fmt.Errorf("io_uring mmap SQ ring: %w", err)
	}
	cqLen := int(p.CQOff.CQEs + p.CQEntries*uint32(unsafe.Sizeof(CQE{})))
	if r.cqRing, err = unix.Mmap(r.fd, offCQRing, cqLen, prot, flags); err != nil {
		return fmt.Errorf("io_uring mmap CQ ring: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.SQEntries)*r.sqeSize, prot, flags); err != nil {
		return fmt.Errorf("io_uring mmap SQEs: %w", err)
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead = u32(r.sqRing, p.SQOff.Head)
	r.sqTail = u32(r.sqRing, p.SQOff.Tail)
	r.sqMask = *u32(r.sqRing, p.SQOff.RingMask)
	r.sqEntries = *u32(r.sqRing, p.SQOff.RingEntries)
	r.sqArray = unsafe.Slice(u32(r.sqRing, p.SQOff.Array), r.sqEntries)
	r.sqTailLocal = atomic.LoadUint32(r.sqTail)
	r.cqHead = u32(r.cqRing, p.CQOff.Head)
	r.cqTail = u32(r.cqRing, p.CQOff.Tail)
	r.cqMask = *u32(r.cqRing, p.CQOff.RingMask)
	cqEntries := *u32(r.cqRing, p.CQOff.RingEntries)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&r.cqRing[p.CQOff.CQEs])), cqEntries)
	return nil
}

// Close unmaps the rings and closes the ring fd. The kernel cancels whatever
// is still in flight.
func (r *Ring) Close() error {
	for _, m := range [][]byte{r.sqeMem, r.cqRing, r.sqRing} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	r.sqeMem, r.cqRing, r.sqRing = nil, nil, nil
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// Entries is the number of SQ slots.
func (r *Ring) Entries() int { return int(r.sqEntries) }

// Pending is the number of prepared SQEs the kernel has not consumed yet.
func (r *Ring) Pending() uint32 { return r.sqTailLocal - atomic.LoadUint32(r.sqHead) }

// next returns the next free SQE, zeroed.
func (r *Ring) next() ([]byte, error) {
	if r.Pending() >= r.sqEntries {
		return nil, ErrRingFull
	}
	idx := r.sqTailLocal & r.sqMask
	sqe := r.sqeMem[int(idx)*r.sqeSize : int(idx+1)*r.sqeSize]
	clear(sqe)
	r.sqArray[idx] = idx
	return sqe, nil
}

// publish makes the prepared SQE visible to the kernel: a release store of
// the tail after the plain stores into the slot (docs/ublk-protocol.md §4.6).
func (r *Ring) publish() {
	r.sqTailLocal++
	atomic.StoreUint32(r.sqTail, r.sqTailLocal)
}

func put16(b []byte, off int, v uint16) { *(*uint16)(unsafe.Pointer(&b[off])) = v }
func put32(b []byte, off int, v uint32) { *(*uint32)(unsafe.Pointer(&b[off])) = v }
func put64(b []byte, off int, v uint64) { *(*uint64)(unsafe.Pointer(&b[off])) = v }

// PrepURingCmd queues an IORING_OP_URING_CMD on fd with command code cmdOp and
// payload cmd (copied into the SQE at byte 48; at most 16 bytes on a 64-byte
// ring, 80 on an SQE128 ring).
func (r *Ring) PrepURingCmd(fd int, cmdOp uint32, cmd []byte, userData uint64) error {
	if _, err := r.prepCmd(fd, cmdOp, cmd, userData); err != nil {
		return err
	}
	r.publish()
	return nil
}

// PrepURingCmdBuf is PrepURingCmd with the SQE's addr and len fields set,
// for commands that pass a buffer (FUSE_IO_URING_CMD_REGISTER: an iovec
// array). The memory at addr must stay put while the command is in flight.
func (r *Ring) PrepURingCmdBuf(fd int, cmdOp uint32, addr uint64, length uint32, cmd []byte, userData uint64) error {
	sqe, err := r.prepCmd(fd, cmdOp, cmd, userData)
	if err != nil {
		return err
	}
	put64(sqe, sqeAddr, addr)
	put32(sqe, sqeLen, length)
	r.publish()
	return nil
}

func (r *Ring) prepCmd(fd int, cmdOp uint32, cmd []byte, userData uint64) ([]byte, error) {
	if len(cmd) > r.sqeSize-SQECmdOffset {
		return nil, fmt.Errorf("uring: command payload %d bytes does not fit a %d-byte SQE", len(cmd), r.sqeSize)
	}
	sqe, err := r.next()
	if err != nil {
		return nil, err
	}
	sqe[sqeOpcode] = OpURingCmd
	put32(sqe, sqeFd, uint32(int32(fd)))
	put32(sqe, sqeOff, cmdOp) // __pad1 (bytes 12–15) stays 0
	put64(sqe, sqeUserData, userData)
	copy(sqe[SQECmdOffset:], cmd)
	return sqe, nil
}

// PrepNop queues a no-op.
func (r *Ring) PrepNop(userData uint64) error {
	sqe, err := r.next()
	if err != nil {
		return err
	}
	sqe[sqeOpcode] = OpNop
	put64(sqe, sqeUserData, userData)
	r.publish()
	return nil
}

// PrepRead queues a read of len(buf) bytes at off from fd into buf. buf must
// not move until the completion arrives: use mmap'd memory.
func (r *Ring) PrepRead(fd int, buf []byte, off uint64, userData uint64) error {
	sqe, err := r.next()
	if err != nil {
		return err
	}
	sqe[sqeOpcode] = OpRead
	put32(sqe, sqeFd, uint32(int32(fd)))
	put64(sqe, sqeOff, off)
	put64(sqe, sqeAddr, uint64(uintptr(unsafe.Pointer(&buf[0]))))
	put32(sqe, sqeLen, uint32(len(buf)))
	put64(sqe, sqeUserData, userData)
	r.publish()
	return nil
}

// Submit hands every prepared SQE to the kernel and, if wait > 0, blocks until
// at least wait completions are available. EINTR (Go's preemption signal) is
// retried; the submit count is recomputed from the kernel's SQ head each time
// because an interrupted call may have consumed part of the batch.
func (r *Ring) Submit(wait uint32) error {
	busy := 0
	for {
		toSubmit := r.Pending()
		flags := uintptr(0)
		if wait > 0 {
			flags = enterGetEvents
		}
		if toSubmit == 0 && wait == 0 {
			return nil
		}
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(wait), flags, 0, 0)
		switch errno {
		case 0:
			if r.Pending() > 0 && wait == 0 {
				continue
			}
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.EBUSY:
			// EBUSY: completions backed up, the caller must reap first.
			// EAGAIN: the kernel could not allocate a request right now.
			// Both pass; failing would end a queue (and with it the device)
			// over a transient shortage, so retry with a short backoff and
			// give up only after about a second.
			if r.Ready() > 0 {
				return nil
			}
			if busy++; busy > maxBusyRetries {
				return fmt.Errorf("io_uring_enter: %w (%d retries)", errno, maxBusyRetries)
			}
			time.Sleep(time.Duration(min(busy, 10)) * 100 * time.Microsecond)
		default:
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// Ready is the number of completions waiting to be reaped.
func (r *Ring) Ready() uint32 { return atomic.LoadUint32(r.cqTail) - atomic.LoadUint32(r.cqHead) }

// Reap calls f for every available completion and returns how many it saw.
// The CQ tail is loaded once (acquire) and the head stored once (release).
func (r *Ring) Reap(f func(CQE)) int {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail; head++ {
		c := r.cqes[head&r.cqMask]
		n++
		f(c)
	}
	atomic.StoreUint32(r.cqHead, head)
	return n
}

// WaitOne submits what is pending, waits for one completion and returns the
// first available one. For rings with one command in flight at a time.
func (r *Ring) WaitOne() (CQE, error) {
	for r.Ready() == 0 {
		if err := r.Submit(1); err != nil {
			return CQE{}, err
		}
	}
	head := atomic.LoadUint32(r.cqHead)
	c := r.cqes[head&r.cqMask]
	atomic.StoreUint32(r.cqHead, head+1)
	return c, nil
}

// RoundUpPow2 returns the smallest power of two >= n (n >= 1).
func RoundUpPow2(n uint32) uint32 {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len32(n-1)
}
