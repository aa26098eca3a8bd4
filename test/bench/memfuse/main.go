// Command memfuse serves one file, read fully into memory, over FUSE with
// the mount options obdfs uses (fusefs.Mount): the FUSE ceiling of the
// side-by-side benchmark (test/bench/side-by-side.sh). It stays in the
// foreground and unmounts on SIGTERM/SIGINT.
//
//	memfuse SRC MOUNTPOINT NAME
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

type root struct {
	fs.Inode
	name string
	data []byte
}

type file struct {
	fs.Inode
	data []byte
}

var (
	_ = (fs.NodeOnAdder)((*root)(nil))
	_ = (fs.NodeOpener)((*file)(nil))
	_ = (fs.NodeReader)((*file)(nil))
	_ = (fs.NodeGetattrer)((*file)(nil))
)

func (r *root) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &file{data: r.data}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(r.name, ch, false)
}

func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *file) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(len(f.data))
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 4096
	out.Nlink = 1
	return 0
}

// Read copies, as obdfs does (its disks fill the request buffer), so the
// ceiling pays the same memcpy per request.
func (f *file) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, f.data[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: memfuse SRC MOUNTPOINT NAME")
		os.Exit(2)
	}
	src, dir, name := os.Args[1], os.Args[2], os.Args[3]
	data, err := os.ReadFile(src)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memfuse:", err)
		os.Exit(1)
	}
	ttl, neg := time.Minute, time.Duration(0)
	// The same options as fusefs.Mount (see docs/PERFORMANCE.md, "FUSE mount options").
	opts := &fs.Options{
		EntryTimeout: &ttl, AttrTimeout: &ttl, NegativeTimeout: &neg,
		MountOptions: fuse.MountOptions{
			FsName: "memfuse", Name: "memfuse",
			MaxWrite: fuse.MAX_KERNEL_WRITE, MaxReadAhead: fuse.MAX_KERNEL_WRITE,
			MaxBackground:     64,
			ExtraCapabilities: fuse.CAP_ASYNC_DIO,
			DisableXAttrs:     true,
			DisableSplice:     true,
			DirectMount:       os.Geteuid() == 0,
			AllowOther:        os.Geteuid() == 0,
		},
	}
	srv, err := fs.Mount(dir, &root{name: name, data: data}, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memfuse: mount:", err)
		os.Exit(1)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err == nil {
		p := filepath.Join("/sys/class/bdi", fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)), "read_ahead_kb")
		if err := os.WriteFile(p, []byte(strconv.Itoa(1024)), 0); err != nil {
			fmt.Fprintln(os.Stderr, "memfuse: readahead:", err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		_ = srv.Unmount()
	}()
	srv.Wait()
}
