package fusefs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/disk"
)

// File is the node of one stack: a regular file whose content is a Disk.
type File struct {
	fs.Inode

	name  string
	d     disk.Disk
	size  int64
	ro    bool
	perm  Perm
	mtime time.Time
	log   *slog.Logger

	// mu is held shared by every request using d and exclusively by close,
	// so a forced Remove never closes the disk under a running request.
	mu     sync.RWMutex
	closed bool

	opens atomic.Int64
	st    counters
}

type counters struct {
	reads, readBytes, writes, writeBytes atomic.Int64
	fsyncs, discards, errors             atomic.Int64
}

// FileStats are the request counters of one stack file since it was added.
type FileStats struct {
	Reads      int64 `json:"reads"`
	ReadBytes  int64 `json:"read_bytes"`
	Writes     int64 `json:"writes"`
	WriteBytes int64 `json:"write_bytes"`
	Fsyncs     int64 `json:"fsyncs"`
	Discards   int64 `json:"discards"`
	Errors     int64 `json:"errors"`
	OpenFiles  int64 `json:"open_files"`
}

var (
	_ = (fs.NodeOpener)((*File)(nil))
	_ = (fs.NodeReader)((*File)(nil))
	_ = (fs.NodeWriter)((*File)(nil))
	_ = (fs.NodeGetattrer)((*File)(nil))
	_ = (fs.NodeSetattrer)((*File)(nil))
	_ = (fs.NodeFsyncer)((*File)(nil))
	_ = (fs.NodeAllocater)((*File)(nil))
	_ = (fs.NodeReleaser)((*File)(nil))
)

// Name is the file name of the stack.
func (f *File) Name() string { return f.name }

// Disk is the served disk.
func (f *File) Disk() disk.Disk { return f.d }

// Stats returns the file's counters.
func (f *File) Stats() FileStats {
	return FileStats{
		Reads: f.st.reads.Load(), ReadBytes: f.st.readBytes.Load(),
		Writes: f.st.writes.Load(), WriteBytes: f.st.writeBytes.Load(),
		Fsyncs: f.st.fsyncs.Load(), Discards: f.st.discards.Load(),
		Errors: f.st.errors.Load(), OpenFiles: f.opens.Load(),
	}
}

// handle marks one open; go-fuse calls Release only for opens that returned
// a handle, and Release is where the open count drops.
type handle struct{}

func (f *File) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if f.ro && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	if flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EPERM
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, 0, syscall.ENOENT
	}
	f.opens.Add(1)
	var fl uint32
	if f.ro {
		fl = fuse.FOPEN_KEEP_CACHE
	}
	return &handle{}, fl, 0
}

func (f *File) Release(ctx context.Context, _ fs.FileHandle) syscall.Errno {
	f.opens.Add(-1)
	return 0
}

func (f *File) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fillAttr(&out.Attr)
	return 0
}

func (f *File) fillAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | f.perm.mode(f.ro)
	a.Uid, a.Gid = f.perm.Uid, f.perm.Gid
	a.Size = uint64(f.size)
	a.Blocks = (uint64(f.size) + 511) / 512
	a.Blksize = 4096
	a.Nlink = 1
	a.SetTimes(nil, &f.mtime, &f.mtime)
}

// Setattr accepts mode, owner and time changes as no-ops (the attributes
// come from the stack) and refuses a size change.
func (f *File) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != f.size {
		return syscall.EPERM
	}
	f.fillAttr(&out.Attr)
	return 0
}

func (f *File) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, syscall.EIO
	}
	if off >= f.size {
		return fuse.ReadResultData(nil), 0
	}
	if rem := f.size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	n, err := f.d.ReadAt(dest, off)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(dest)) {
		f.st.errors.Add(1)
		f.log.Error("read failed", "stack", f.name, "off", off, "len", len(dest), "err", err)
		return nil, syscall.EIO
	}
	f.st.reads.Add(1)
	f.st.readBytes.Add(int64(n))
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *File) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f.ro {
		return 0, syscall.EROFS
	}
	if off >= f.size {
		return 0, syscall.ENOSPC
	}
	if rem := f.size - off; int64(len(data)) > rem {
		data = data[:rem] // short write; the next one gets ENOSPC
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0, syscall.EIO
	}
	n, err := f.d.WriteAt(data, off)
	if err != nil {
		f.st.errors.Add(1)
		f.log.Error("write failed", "stack", f.name, "off", off, "len", len(data), "err", err)
		return uint32(n), errnoOf(err)
	}
	f.st.writes.Add(1)
	f.st.writeBytes.Add(int64(n))
	return uint32(n), 0
}

func (f *File) Fsync(ctx context.Context, _ fs.FileHandle, flags uint32) syscall.Errno {
	if f.ro {
		return 0
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return syscall.EIO
	}
	f.st.fsyncs.Add(1)
	if err := f.d.Flush(); err != nil {
		f.st.errors.Add(1)
		f.log.Error("fsync failed", "stack", f.name, "err", err)
		return syscall.EIO
	}
	return 0
}

// Allocate handles fallocate: plain allocation inside the disk is a no-op
// (the disk has its size), PUNCH_HOLE and ZERO_RANGE discard.
func (f *File) Allocate(ctx context.Context, _ fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	const supported = unix.FALLOC_FL_KEEP_SIZE | unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_ZERO_RANGE
	if mode&^supported != 0 {
		return syscall.EOPNOTSUPP
	}
	if f.ro {
		return syscall.EROFS
	}
	end := off + size
	if end < off || int64(off) < 0 {
		return syscall.EINVAL
	}
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) == 0 {
		if end > uint64(f.size) && mode&unix.FALLOC_FL_KEEP_SIZE == 0 {
			return syscall.EFBIG
		}
		return 0
	}
	if off >= uint64(f.size) {
		return 0
	}
	end = min(end, uint64(f.size))
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return syscall.EIO
	}
	if err := f.d.Discard(int64(off), int64(end-off)); err != nil {
		f.st.errors.Add(1)
		f.log.Error("discard failed", "stack", f.name, "off", off, "len", end-off, "err", err)
		return errnoOf(err)
	}
	f.st.discards.Add(1)
	return 0
}

// close flushes and closes the disk, waiting for requests in flight.
func (f *File) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var ferr error
	if !f.ro {
		ferr = f.d.Flush()
	}
	return errors.Join(ferr, f.d.Close())
}

func (f *File) flush() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed || f.ro {
		return nil
	}
	return f.d.Flush()
}

func errnoOf(err error) syscall.Errno {
	if errors.Is(err, disk.ErrReadOnly) {
		return syscall.EROFS
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
