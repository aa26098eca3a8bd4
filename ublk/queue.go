package ublk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/internal/uring"
	"github.com/obdfs/obdfs/ublk/internal/uapi"
)

// user_data of the eventfd read on a queue ring; tags use the low 16 bits.
const wakeTag = 1 << 32

// maxWorkers caps the disk-I/O goroutines of one queue.
const maxWorkers = 32

var eventfdOne = [8]byte{1}

// request is one request handed from the queue goroutine to a worker: the
// descriptor is read once, by the queue goroutine, when its CQE arrives.
type request struct {
	tag  int
	desc uapi.IODesc
}

type completion struct {
	tag int
	res int32
}

// queue is one ublk hardware queue: a ring owned by one locked goroutine,
// the kernel's descriptor array, per-tag buffers and a pool of workers.
type queue struct {
	dev   *Device
	id    int
	depth int

	ring     *uring.Ring
	descs    []byte // kernel-written descriptors (PROT_READ mmap)
	mem      []byte // mmap: depth buffers of maxIO bytes, then 8 bytes for the eventfd read
	maxIO    int
	efd      int
	fetchOp  uint32
	commitOp uint32
	userCopy bool
	cmd      uapi.IOCmd // scratch for ioCmd; queue goroutine only

	work    chan request
	workers sync.WaitGroup

	mu       sync.Mutex
	done     []completion
	spare    []completion
	woken    bool
	quitting atomic.Bool
}

func (q *queue) buf(tag int) []byte { return q.mem[tag*q.maxIO : (tag+1)*q.maxIO] }

// setup runs on the locked thread: the ring is created (and so first used)
// by the thread that will submit on it.
func (q *queue) setup() error {
	dev := q.dev
	q.maxIO = int(dev.info.MaxIOBufBytes)
	q.userCopy = dev.info.Flags&uapi.FUserCopy != 0
	if dev.info.Flags&uapi.FCmdIoctlEncode != 0 {
		q.fetchOp, q.commitOp = uapi.IOIoctl(uapi.IOFetchReq), uapi.IOIoctl(uapi.IOCommitAndFetchReq)
	} else {
		q.fetchOp, q.commitOp = uapi.IOFetchReq, uapi.IOCommitAndFetchReq
	}
	var err error
	// One SQE per tag plus the eventfd read; the CQ is twice that.
	if q.ring, err = uring.New(uring.RoundUpPow2(uint32(q.depth+1)), 0); err != nil {
		return fmt.Errorf("ublk queue %d: %w", q.id, err)
	}
	page := os.Getpagesize()
	descLen := (q.depth*uapi.IODescSize + page - 1) / page * page
	q.descs, err = unix.Mmap(int(dev.char.Fd()), uapi.DescOffset(q.id, page), descLen,
		unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("ublk queue %d: mmap descriptors: %w", q.id, err)
	}
	q.mem, err = unix.Mmap(-1, 0, q.depth*q.maxIO+page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("ublk queue %d: buffers: %w", q.id, err)
	}
	if q.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		return fmt.Errorf("ublk queue %d: eventfd: %w", q.id, err)
	}
	q.done = make([]completion, 0, q.depth)
	q.spare = make([]completion, 0, q.depth)
	q.work = make(chan request, q.depth)
	return nil
}

func (q *queue) teardown() {
	if q.ring != nil {
		q.ring.Close()
	}
	if q.descs != nil {
		unix.Munmap(q.descs)
	}
	if q.mem != nil {
		unix.Munmap(q.mem)
	}
	q.mu.Lock()
	if q.efd >= 0 {
		unix.Close(q.efd)
		q.efd = -1
	}
	q.mu.Unlock()
}

// run is the queue goroutine. It reports on ready once its FETCHes are in
// (or it failed), then serves until every tag is aborted by the kernel
// (STOP_DEV) or quit is called.
func (q *queue) run(ready chan<- error) {
	// Never unlocked: if the goroutine ends the thread ends with it, and
	// io_uring cancels whatever that task still had in flight.
	runtime.LockOSThread()
	err := q.setup()
	if err == nil {
		err = q.fetchAll()
	}
	if err != nil {
		q.teardown()
		ready <- err
		return
	}
	nw := min(q.depth, maxWorkers)
	q.workers.Add(nw)
	for range nw {
		go q.worker()
	}
	ready <- nil
	q.serve()
	close(q.work)
	q.workers.Wait()
	q.teardown()
}

// ioCmd encodes the I/O command payload into q.cmd (a field, so the hot
// path does not allocate) and returns its bytes.
func (q *queue) ioCmd(tag int, res int32) []byte {
	q.cmd = uapi.IOCmd{QID: uint16(q.id), Tag: uint16(tag), Result: res}
	if !q.userCopy {
		q.cmd.Addr = uapi.Ptr(q.buf(tag))
	}
	return uapi.Bytes(&q.cmd)
}

func (q *queue) prep(op uint32, tag int, res int32) error {
	fd := int(q.dev.char.Fd())
	err := q.ring.PrepURingCmd(fd, op, q.ioCmd(tag, res), uint64(tag))
	if errors.Is(err, uring.ErrRingFull) {
		if err = q.ring.Submit(0); err == nil {
			err = q.ring.PrepURingCmd(fd, op, q.ioCmd(tag, res), uint64(tag))
		}
	}
	return err
}

func (q *queue) armWake() error {
	fd := q.efd
	err := q.ring.PrepRead(fd, q.mem[q.depth*q.maxIO:q.depth*q.maxIO+8], 0, wakeTag)
	if errors.Is(err, uring.ErrRingFull) {
		if err = q.ring.Submit(0); err == nil {
			err = q.ring.PrepRead(fd, q.mem[q.depth*q.maxIO:q.depth*q.maxIO+8], 0, wakeTag)
		}
	}
	return err
}

// fetchAll queues FETCH_REQ for every tag. The kernel handles FETCH at
// submission, so a rejected FETCH is already visible as a CQE: catch it
// here, since START_DEV would otherwise wait for that tag forever.
func (q *queue) fetchAll() error {
	for tag := range q.depth {
		if err := q.prep(q.fetchOp, tag, 0); err != nil {
			return fmt.Errorf("ublk queue %d: %w", q.id, err)
		}
	}
	if err := q.armWake(); err != nil {
		return fmt.Errorf("ublk queue %d: %w", q.id, err)
	}
	if err := q.ring.Submit(0); err != nil {
		return fmt.Errorf("ublk queue %d: submit FETCH: %w", q.id, err)
	}
	var bad error
	if q.ring.Ready() > 0 {
		q.ring.Reap(func(c uring.CQE) {
			if c.Res < 0 && bad == nil {
				bad = fmt.Errorf("ublk queue %d: FETCH tag %d: %w", q.id, c.UserData, unix.Errno(-c.Res))
			}
		})
	}
	return bad
}

func (q *queue) serve() {
	live := q.depth // tags the kernel or a worker holds
	var loopErr error
	handle := func(c uring.CQE) {
		if c.UserData == wakeTag {
			q.mu.Lock()
			batch := q.done
			q.done, q.spare = q.spare[:0], batch
			q.woken = false
			q.mu.Unlock()
			for _, d := range batch {
				if err := q.prep(q.commitOp, d.tag, d.res); err != nil && loopErr == nil {
					loopErr = err
				}
			}
			if c.Res < 0 && c.Res != -int32(unix.EINTR) && loopErr == nil {
				loopErr = fmt.Errorf("eventfd read: %w", unix.Errno(-c.Res))
			}
			if err := q.armWake(); err != nil && loopErr == nil {
				loopErr = err
			}
			return
		}
		tag := int(c.UserData & 0xffff)
		switch {
		case c.Res == uapi.IOResOK:
			// The kernel wrote the descriptor before posting the CQE, and the
			// acquire load of the CQ tail in Reap orders this read after it.
			q.work <- request{tag: tag, desc: uapi.DescAt(q.descs, tag)}
		case c.Res == uapi.IOResAbort:
			live--
		default:
			live--
			q.dev.log.Error("ublk: I/O command refused", "queue", q.id, "tag", tag, "err", unix.Errno(-c.Res))
		}
	}
	for live > 0 && !q.quitting.Load() {
		if err := q.ring.Submit(1); err != nil {
			q.dev.log.Error("ublk: queue ring", "queue", q.id, "err", err)
			break
		}
		q.ring.Reap(handle)
		if loopErr != nil {
			q.dev.log.Error("ublk: queue", "queue", q.id, "err", loopErr)
			break
		}
	}
}

// quit makes serve return without waiting for the kernel to abort the tags
// (error paths before START_DEV).
func (q *queue) quit() {
	q.quitting.Store(true)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.efd >= 0 {
		unix.Write(q.efd, eventfdOne[:])
	}
}

func (q *queue) complete(tag int, res int32) {
	q.mu.Lock()
	q.done = append(q.done, completion{tag, res})
	wake := !q.woken
	q.woken = true
	q.mu.Unlock()
	if wake {
		unix.Write(q.efd, eventfdOne[:])
	}
}

func (q *queue) worker() {
	defer q.workers.Done()
	for r := range q.work {
		q.complete(r.tag, q.handle(r))
	}
}

// handle runs one request against the disk and returns the COMMIT result:
// bytes done for READ/WRITE, 0 for the others, -errno on failure.
func (q *queue) handle(r request) int32 {
	d := q.dev.disk
	off := int64(r.desc.StartSector) << uapi.SectorShift
	n := int64(r.desc.NrSectors) << uapi.SectorShift
	op := r.desc.Op()
	var err error
	switch op {
	case uapi.OpRead, uapi.OpWrite, uapi.OpDiscard, uapi.OpWriteZeroes:
		// The block layer never sends a request past the capacity given at
		// SET_PARAMS; a kernel bug must not become a write or a discard
		// beyond the device, nor a read past the disk.
		if off+n > q.dev.size {
			q.dev.log.Error("ublk: request past the end of the device", "op", op, "off", off, "len", n, "size", q.dev.size)
			return -int32(unix.EIO)
		}
	case uapi.OpFlush:
	default:
		// Zone ops (10–15, 18) only reach zoned devices, which we never
		// create; WRITE_SAME (4) is never sent. Refuse anything unknown
		// rather than leave the request hanging.
		q.dev.log.Error("ublk: unsupported request", "op", op, "off", off, "len", n)
		return -int32(unix.EOPNOTSUPP)
	}
	switch op {
	case uapi.OpRead, uapi.OpWrite:
		if n > int64(q.maxIO) || n == 0 {
			err = fmt.Errorf("request of %d bytes, buffers hold %d", n, q.maxIO)
			break
		}
		buf := q.buf(r.tag)[:n]
		if op == uapi.OpRead {
			if err = readFull(d, buf, off); err == nil && q.userCopy {
				err = q.copyOut(r.tag, buf)
			}
		} else {
			if q.userCopy {
				err = q.copyIn(r.tag, buf)
			}
			if err == nil {
				_, err = d.WriteAt(buf, off)
			}
			if err == nil && r.desc.OpFlags&uapi.IOFFUA != 0 {
				err = d.Flush()
			}
		}
		if err == nil {
			return int32(n)
		}
	case uapi.OpFlush:
		err = d.Flush()
	case uapi.OpDiscard:
		if n > 0 {
			err = d.Discard(off, n)
		}
	case uapi.OpWriteZeroes:
		// NOUNMAP: the range must stay allocated, so write real zeros;
		// otherwise a discard (which reads back as zeros) does it cheaper.
		if r.desc.OpFlags&uapi.IOFNoUnmap != 0 {
			err = q.writeZeroes(r.tag, off, n)
		} else if n > 0 {
			err = d.Discard(off, n)
		}
	}
	if err == nil {
		return 0
	}
	q.dev.log.Error("ublk: I/O failed", "op", op, "off", off, "len", n, "err", err)
	switch {
	case errors.Is(err, disk.ErrReadOnly):
		return -int32(unix.EROFS)
	case errors.Is(err, unix.ENOSPC):
		return -int32(unix.ENOSPC)
	}
	return -int32(unix.EIO)
}

// readFull fills buf from d at off; bytes past the end of d (the device is
// rounded to whole sectors) read as zeros.
func readFull(d disk.Disk, buf []byte, off int64) error {
	m, err := d.ReadAt(buf, off)
	if err == io.EOF && off+int64(len(buf)) > d.Size() {
		clear(buf[m:])
		return nil
	}
	if err == nil && m < len(buf) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (q *queue) writeZeroes(tag int, off, n int64) error {
	buf := q.buf(tag)
	clear(buf)
	for n > 0 {
		c := min(n, int64(len(buf)))
		if _, err := q.dev.disk.WriteAt(buf[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// copyOut supplies READ data to the kernel (USER_COPY: pwrite on ublkc).
func (q *queue) copyOut(tag int, buf []byte) error {
	fd := int(q.dev.char.Fd())
	for done := 0; done < len(buf); {
		m, err := unix.Pwrite(fd, buf[done:], uapi.UserCopyOffset(q.id, tag, int64(done)))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("user copy to request: %w", err)
		}
		if m == 0 {
			return io.ErrShortWrite
		}
		done += m
	}
	return nil
}

// copyIn fetches WRITE data from the kernel (USER_COPY: pread on ublkc).
func (q *queue) copyIn(tag int, buf []byte) error {
	fd := int(q.dev.char.Fd())
	for done := 0; done < len(buf); {
		m, err := unix.Pread(fd, buf[done:], uapi.UserCopyOffset(q.id, tag, int64(done)))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("user copy from request: %w", err)
		}
		if m == 0 {
			return io.ErrUnexpectedEOF
		}
		done += m
	}
	return nil
}
