package fusefs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/uring"
)

// FUSE over io_uring (kernel 6.14+, CONFIG_FUSE_IO_URING, module parameter
// fuse.enable_uring): after the INIT reply carries FUSE_OVER_IO_URING, the
// daemon registers ring entries on /dev/fuse with IORING_OP_URING_CMD. Each
// entry is a header buffer and a payload buffer; the kernel completes an
// entry's command when it has put a request in it, and the daemon commits the
// reply and asks for the next request in one command (COMMIT_AND_FETCH). The
// kernel keeps one queue per possible CPU and puts a request on the queue of
// the CPU its caller runs on; it uses the rings only once every queue has an
// entry registered. FORGET and INTERRUPT still come through /dev/fuse, where
// go-fuse's loop keeps serving them. Layouts: include/uapi/linux/fuse.h
// (fuse_uring_req_header, fuse_uring_cmd_req).
//
// A ring serves its requests one after the other on its own thread (as
// libfuse does): no goroutine or wake-up per request, which is what makes
// small reads fast. Each CPU's queue is served by uringThreads rings, so a
// slow request (a registry fetch of a lazy layer, an fsync) holds up only
// its own ring; more than uringThreads slow requests from one CPU wait for
// each other, where /dev/fuse would run them all in parallel.

const (
	uringCmdRegister       = 1
	uringCmdCommitAndFetch = 2

	uringInOutSize  = 128 // fuse_in_header / fuse_out_header area
	uringOpInSize   = 128 // the per-opcode header
	uringHeaderSize = uringInOutSize + uringOpInSize + 32
	uringHeaderStep = 512 // header buffers are placed at this stride

	// ent_in_out fields, after in_out and op_in
	uringCommitIDOff  = uringInOutSize + uringOpInSize + 8
	uringPayloadSzOff = uringInOutSize + uringOpInSize + 16

	inHeaderSize = 40 // fuse_in_header
	outHeaderLen = 16 // fuse_out_header

	// Each kernel queue (one per CPU) is served by uringThreads rings, each
	// on its own thread with uringRingDepth entries: the kernel hands a
	// request to any free entry of the queue, whichever ring registered
	// it, so up to uringThreads requests of one CPU are served at once.
	// One entry per ring: an entry of a ring whose thread is busy with a
	// slow request would otherwise take the next request and hold it.
	uringThreads   = 8
	uringRingDepth = 1

	enableURingParam = "/sys/module/fuse/parameters/enable_uring"
)

// FUSE opcodes served through the ring (include/uapi/linux/fuse.h).
const (
	opLookup     = 1
	opGetattr    = 3
	opSetattr    = 4
	opReadlink   = 5
	opMknod      = 8
	opMkdir      = 9
	opUnlink     = 10
	opRmdir      = 11
	opOpen       = 14
	opRead       = 15
	opWrite      = 16
	opStatfs     = 17
	opRelease    = 18
	opFsync      = 20
	opFlush      = 25
	opOpendir    = 27
	opReaddir    = 28
	opReleasedir = 29
	opFsyncdir   = 30
	opAccess     = 34
	opCreate     = 35
	opDestroy    = 38
	opFallocate  = 43
	opLseek      = 46
)

// go-fuse answers LOOKUP of pollHackName in the root with a placeholder
// node (pollHackInode) whose POLL gets ENOSYS, after which the kernel never
// sends POLL on this connection again (fuse/poll.go in go-fuse).
const (
	pollHackName  = ".go-fuse-epoll-hack"
	pollHackInode = ^uint64(0)
)

// pollHack does what go-fuse's WaitMount does for the mounts it makes
// itself (it cannot for a /dev/fd/N mount): make the kernel ask POLL once,
// answered ENOSYS (by pollHackNode: once FUSE_OVER_IO_URING is agreed, the
// kernel holds every request until the ring is ready). Otherwise the
// first os.Open of a file of the mount by this process (tests do that)
// sends POLL from inside the Go runtime's epoll_ctl, which holds a P while
// it waits: with the ring thread also needing a P to return from
// io_uring_enter, two such opens deadlock the process.
func pollHack(dir string) error {
	fd, err := unix.Open(dir+"/"+pollHackName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("poll hack: %w", err)
	}
	defer unix.Close(fd)
	_, err = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return err
}

// URingOffered reports whether the kernel offers FUSE over io_uring to new
// mounts (the fuse module's enable_uring parameter), and why not.
func URingOffered() (bool, error) {
	b, err := os.ReadFile(enableURingParam)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("%s does not exist: the kernel has no FUSE over io_uring (needs 6.14+ with CONFIG_FUSE_IO_URING)", enableURingParam)
		}
		return false, err
	}
	if strings.TrimSpace(string(b)) != "Y" {
		return false, fmt.Errorf("%s is %q: as root, echo Y > %s", enableURingParam, strings.TrimSpace(string(b)), enableURingParam)
	}
	return true, nil
}

// possibleCPUs is the kernel's num_possible_cpus(): the number of queues it
// expects.
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		z := a
		var err2 error
		if found {
			z, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || z < a {
			return 0, fmt.Errorf("/sys/devices/system/cpu/possible: cannot parse %q", b)
		}
		n = max(n, z+1)
	}
	return n, nil
}

// ringServer serves a mount's requests from one io_uring queue per CPU.
type ringServer struct {
	fd         int // /dev/fuse
	fs         fuse.RawFileSystem
	maxPayload int
	log        *slog.Logger
	queues     []*ringQueue
	wg         sync.WaitGroup
}

type ringQueue struct {
	s     *ringServer
	qid   int
	ring  *uring.Ring
	mem   []byte // headers, iovecs and payloads of every entry (mmap: never moves)
	in    [inHeaderSize + uringOpInSize]byte
	cmd   [24]byte // fuse_uring_cmd_req
	depth int
	err   error // why the queue stopped, if not by unmount
}

// startRing registers every queue's entries. It fails if any queue cannot
// register (the kernel then keeps serving through /dev/fuse).
func startRing(fd int, rawFS fuse.RawFileSystem, maxPayload int, log *slog.Logger) (*ringServer, error) {
	n, err := possibleCPUs()
	if err != nil {
		return nil, err
	}
	s := &ringServer{fd: fd, fs: rawFS, maxPayload: maxPayload, log: log}
	started := make(chan error, n*uringThreads)
	for qid := range n {
		for range uringThreads {
			q := &ringQueue{s: s, qid: qid, depth: uringRingDepth}
			s.queues = append(s.queues, q)
			s.wg.Add(1)
			go q.run(started)
		}
	}
	var errs []error
	for range n * uringThreads {
		if err := <-started; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// Registered entries end when the connection does.
		return s, errors.Join(errs...)
	}
	return s, nil
}

// wait returns when every queue has stopped (the connection ended).
func (s *ringServer) wait() { s.wg.Wait() }

func (q *ringQueue) header(e int) []byte {
	return q.mem[e*uringHeaderStep : e*uringHeaderStep+uringHeaderSize]
}

func (q *ringQueue) iov(e int) []byte {
	off := q.depth*uringHeaderStep + e*32
	return q.mem[off : off+32]
}

func (q *ringQueue) payload(e int) []byte {
	base := q.depth*uringHeaderStep + q.depth*32
	base = (base + 4095) &^ 4095
	return q.mem[base+e*q.s.maxPayload : base+(e+1)*q.s.maxPayload]
}

func (q *ringQueue) memSize() int {
	base := (q.depth*uringHeaderStep + q.depth*32 + 4095) &^ 4095
	return base + q.depth*q.s.maxPayload
}

// run owns the queue's ring on one locked OS thread: the kernel hands a
// request to the task that submitted the entry's command.
func (q *ringQueue) run(started chan<- error) {
	defer q.s.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err := q.setup()
	if err != nil {
		q.close()
		started <- fmt.Errorf("fuse io_uring queue %d: %w", q.qid, err)
		return
	}
	// Commands that failed at once complete before Submit returns.
	var early []uring.CQE
	q.ring.Reap(func(c uring.CQE) { early = append(early, c) })
	for _, c := range early {
		if c.Res < 0 {
			err = fmt.Errorf("fuse io_uring queue %d: register: %w", q.qid, syscall.Errno(-c.Res))
			break
		}
	}
	started <- err
	// On error the other entries stay registered until the connection
	// ends; loop waits for that.
	q.loop(early)
}

func (q *ringQueue) setup() error {
	var err error
	if q.mem, err = unix.Mmap(-1, 0, q.memSize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		return fmt.Errorf("buffers: %w", err)
	}
	// Two completions per entry at most can be outstanding (a request and,
	// at teardown, a cancellation), so a CQ of 2×depth never overflows.
	if q.ring, err = uring.New(uint32(q.depth), uring.SetupSQE128); err != nil {
		return err
	}
	for e := range q.depth {
		iov := q.iov(e)
		h, p := q.header(e), q.payload(e)
		*(*uint64)(unsafe.Pointer(&iov[0])) = uint64(uintptr(unsafe.Pointer(&h[0])))
		*(*uint64)(unsafe.Pointer(&iov[8])) = uint64(len(h))
		*(*uint64)(unsafe.Pointer(&iov[16])) = uint64(uintptr(unsafe.Pointer(&p[0])))
		*(*uint64)(unsafe.Pointer(&iov[24])) = uint64(len(p))
		q.setCmd(0)
		if err := q.ring.PrepURingCmdBuf(q.s.fd, uringCmdRegister, uint64(uintptr(unsafe.Pointer(&iov[0]))), 2, q.cmd[:], uint64(e)); err != nil {
			return err
		}
	}
	return q.ring.Submit(0)
}

func (q *ringQueue) setCmd(commitID uint64) {
	clear(q.cmd[:])
	*(*uint64)(unsafe.Pointer(&q.cmd[8])) = commitID
	*(*uint16)(unsafe.Pointer(&q.cmd[16])) = uint16(q.qid)
}

func (q *ringQueue) close() {
	if q.ring != nil {
		q.ring.Close()
		q.ring = nil
	}
	if q.mem != nil {
		unix.Munmap(q.mem)
		q.mem = nil
	}
}

// loop serves requests until the kernel ends the entries (unmount: every
// command completes with ENOTCONN or ECANCELED).
func (q *ringQueue) loop(first []uring.CQE) {
	defer q.close()
	live := q.depth
	handle := func(c uring.CQE) {
		e := int(c.UserData)
		switch {
		case c.Res == 0:
			q.serve(e)
		case c.Res == -int32(unix.EAGAIN) || c.Res == -int32(unix.EINTR):
			q.setCmd(0)
			iov := q.iov(e)
			if err := q.ring.PrepURingCmdBuf(q.s.fd, uringCmdRegister, uint64(uintptr(unsafe.Pointer(&iov[0]))), 2, q.cmd[:], uint64(e)); err != nil {
				q.err = err
				live--
			}
		default:
			// ENOTCONN/ECANCELED at unmount; anything else ends the
			// entry too (the kernel no longer holds it).
			if c.Res != -int32(unix.ENOTCONN) && c.Res != -int32(unix.ECANCELED) {
				q.err = syscall.Errno(-c.Res)
				q.s.log.Warn("fuse io_uring entry ended", "queue", q.qid, "entry", e, "err", q.err)
			}
			live--
		}
	}
	for _, c := range first {
		handle(c)
	}
	for live > 0 {
		if err := q.ring.Submit(1); err != nil {
			q.err = err
			q.s.log.Error("fuse io_uring queue stopped", "queue", q.qid, "err", err)
			return
		}
		q.ring.Reap(handle)
	}
}

// serve answers the request in entry e and queues its commit (which also
// fetches the entry's next request).
func (q *ringQueue) serve(e int) {
	h := q.header(e)
	p := q.payload(e)
	commitID := *(*uint64)(unsafe.Pointer(&h[uringCommitIDOff]))
	inSize := int(*(*uint32)(unsafe.Pointer(&h[uringPayloadSzOff])))
	copy(q.in[:inHeaderSize], h[:inHeaderSize])
	copy(q.in[inHeaderSize:], h[uringInOutSize:uringInOutSize+uringOpInSize])
	hdr := (*fuse.InHeader)(unsafe.Pointer(&q.in[0]))
	unique := hdr.Unique
	n, st := q.dispatch(hdr, p, p[:min(inSize, len(p))])
	if st != fuse.OK {
		n = 0
	}
	clear(h[:outHeaderLen])
	*(*uint32)(unsafe.Pointer(&h[0])) = uint32(outHeaderLen + n)
	*(*int32)(unsafe.Pointer(&h[4])) = -int32(st)
	*(*uint64)(unsafe.Pointer(&h[8])) = unique
	*(*uint32)(unsafe.Pointer(&h[uringPayloadSzOff])) = uint32(n)
	q.setCmd(commitID)
	if err := q.ring.PrepURingCmd(q.s.fd, uringCmdCommitAndFetch, q.cmd[:], uint64(e)); err != nil {
		// Cannot happen: each entry has at most one command queued and
		// the SQ has depth slots.
		q.err = err
	}
}

// pollHackNode answers for the placeholder file pollHack opens, as go-fuse's
// /dev/fuse loop does: a regular file that opens, and whose POLL is ENOSYS.
func (q *ringQueue) pollHackNode(opcode uint32, payload []byte) (int, fuse.Status) {
	attr := fuse.Attr{Ino: pollHackInode, Mode: fuse.S_IFREG | 0o644, Nlink: 1}
	switch opcode {
	case opLookup:
		o := out[fuse.EntryOut](payload)
		o.NodeId, o.Attr = pollHackInode, attr
		return size[fuse.EntryOut](), fuse.OK
	case opOpen:
		out[fuse.OpenOut](payload).Fh = pollHackInode
		return size[fuse.OpenOut](), fuse.OK
	case opGetattr, opSetattr:
		out[fuse.AttrOut](payload).Attr = attr
		return size[fuse.AttrOut](), fuse.OK
	case opFlush, opRelease:
		return 0, fuse.OK
	}
	return 0, fuse.ENOSYS
}

// out returns the reply struct T at the start of the payload, zeroed.
func out[T any](p []byte) *T {
	var zero T
	t := (*T)(unsafe.Pointer(&p[0]))
	*t = zero
	return t
}

func size[T any]() int {
	var t T
	return int(unsafe.Sizeof(t))
}

// names splits the NUL-terminated names at the start of the request payload.
func names(in []byte, count int) ([]string, bool) {
	var r []string
	for range count {
		i := strings.IndexByte(unsafe.String(unsafe.SliceData(in), len(in)), 0)
		if i < 0 {
			return nil, false
		}
		r = append(r, string(in[:i]))
		in = in[i+1:]
	}
	return r, true
}

// dispatch calls the file system for one request. in points into the
// reassembled header+op_in buffer; payload is the entry's payload buffer
// (request data on entry, reply data on return); req is the request's
// part of it. It returns the reply's payload length.
func (q *ringQueue) dispatch(hdr *fuse.InHeader, payload, req []byte) (int, fuse.Status) {
	fs := q.s.fs
	ptr := unsafe.Pointer(&q.in[0])
	if hdr.NodeId == pollHackInode {
		return q.pollHackNode(hdr.Opcode, payload)
	}
	switch hdr.Opcode {
	case opRead:
		in := (*fuse.ReadIn)(ptr)
		buf := payload[:min(int(in.Size), len(payload))]
		res, st := fs.Read(nil, in, buf)
		if st != fuse.OK {
			return 0, st
		}
		data, st := res.Bytes(buf)
		if st == fuse.OK && len(data) > 0 && unsafe.SliceData(data) != unsafe.SliceData(buf) {
			data = buf[:copy(buf, data)]
		}
		res.Done()
		return len(data), st
	case opWrite:
		in := (*fuse.WriteIn)(ptr)
		if int(in.Size) > len(req) {
			return 0, fuse.EINVAL
		}
		n, st := fs.Write(nil, in, req[:in.Size])
		out[fuse.WriteOut](payload).Size = n
		return size[fuse.WriteOut](), st
	case opLookup:
		nm, ok := names(req, 1)
		if !ok {
			return 0, fuse.EINVAL
		}
		if hdr.NodeId == fuse.FUSE_ROOT_ID && nm[0] == pollHackName {
			return q.pollHackNode(opLookup, payload)
		}
		return size[fuse.EntryOut](), fs.Lookup(nil, hdr, nm[0], out[fuse.EntryOut](payload))
	case opGetattr:
		return size[fuse.AttrOut](), fs.GetAttr(nil, (*fuse.GetAttrIn)(ptr), out[fuse.AttrOut](payload))
	case opSetattr:
		return size[fuse.AttrOut](), fs.SetAttr(nil, (*fuse.SetAttrIn)(ptr), out[fuse.AttrOut](payload))
	case opOpen:
		return size[fuse.OpenOut](), fs.Open(nil, (*fuse.OpenIn)(ptr), out[fuse.OpenOut](payload))
	case opOpendir:
		return size[fuse.OpenOut](), fs.OpenDir(nil, (*fuse.OpenIn)(ptr), out[fuse.OpenOut](payload))
	case opRelease:
		fs.Release(nil, (*fuse.ReleaseIn)(ptr))
		return 0, fuse.OK
	case opReleasedir:
		fs.ReleaseDir((*fuse.ReleaseIn)(ptr))
		return 0, fuse.OK
	case opFlush:
		return 0, fs.Flush(nil, (*fuse.FlushIn)(ptr))
	case opFsync:
		return 0, fs.Fsync(nil, (*fuse.FsyncIn)(ptr))
	case opFsyncdir:
		return 0, fs.FsyncDir(nil, (*fuse.FsyncIn)(ptr))
	case opReaddir:
		in := (*fuse.ReadIn)(ptr)
		l := fuse.NewDirEntryList(payload[:min(int(in.Size), len(payload))], in.Offset)
		st := fs.ReadDir(nil, in, l)
		return len(l.Bytes()), st
	case opStatfs:
		return size[fuse.StatfsOut](), fs.StatFs(nil, hdr, out[fuse.StatfsOut](payload))
	case opAccess:
		return 0, fs.Access(nil, (*fuse.AccessIn)(ptr))
	case opFallocate:
		return 0, fs.Fallocate(nil, (*fuse.FallocateIn)(ptr))
	case opLseek:
		return size[fuse.LseekOut](), fs.Lseek(nil, (*fuse.LseekIn)(ptr), out[fuse.LseekOut](payload))
	case opReadlink:
		b, st := fs.Readlink(nil, hdr)
		if st != fuse.OK || len(b) > len(payload) {
			return 0, st
		}
		return copy(payload, b), st
	case opCreate:
		nm, ok := names(req, 1)
		if !ok {
			return 0, fuse.EINVAL
		}
		return size[fuse.CreateOut](), fs.Create(nil, (*fuse.CreateIn)(ptr), nm[0], out[fuse.CreateOut](payload))
	case opMknod:
		nm, ok := names(req, 1)
		if !ok {
			return 0, fuse.EINVAL
		}
		return size[fuse.EntryOut](), fs.Mknod(nil, (*fuse.MknodIn)(ptr), nm[0], out[fuse.EntryOut](payload))
	case opMkdir:
		nm, ok := names(req, 1)
		if !ok {
			return 0, fuse.EINVAL
		}
		return size[fuse.EntryOut](), fs.Mkdir(nil, (*fuse.MkdirIn)(ptr), nm[0], out[fuse.EntryOut](payload))
	case opUnlink, opRmdir:
		nm, ok := names(req, 1)
		if !ok {
			return 0, fuse.EINVAL
		}
		if hdr.Opcode == opUnlink {
			return 0, fs.Unlink(nil, hdr, nm[0])
		}
		return 0, fs.Rmdir(nil, hdr, nm[0])
	case opDestroy:
		return 0, fuse.OK
	}
	return 0, fuse.ENOSYS
}
