package fusefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MountOptions are the tunables of a mount. The zero value gives the
// defaults measured in docs/PERFORMANCE.md, "FUSE mount options".
type MountOptions struct {
	// MaxIO is the largest READ/WRITE request, in bytes. Default 1 MiB,
	// capped by go-fuse at the kernel's fs.fuse.max_pages_limit pages.
	MaxIO int
	// ReadAheadKB is written to the mount's bdi read_ahead_kb after the
	// mount: the FUSE INIT reply cannot raise readahead above 128 KiB.
	// Default 1024; negative leaves the kernel's value.
	ReadAheadKB int
	// MaxBackground is the number of asynchronous requests (readahead,
	// async direct I/O) the kernel keeps in flight. Default 64.
	MaxBackground int
	// FsName is the "device" column of /proc/mounts. Default "obdfs".
	FsName string
	// Debug logs every FUSE request.
	Debug bool
	// AllowOther lets users other than the one who mounted open the
	// files (FUSE allow_other; for a non-root mounter /etc/fuse.conf must
	// have user_allow_other). The kernel then checks each file's owner and
	// mode (default_permissions, always on). Off by default: the mount is
	// private to its owner.
	AllowOther bool
	// URing selects the transport: "off" (or empty) reads requests from
	// /dev/fuse; "on" serves them through FUSE over io_uring and fails
	// when the kernel does not offer it; "auto" uses io_uring when the
	// kernel offers it (and the daemon is root), else /dev/fuse.
	URing string
}

// Server is a mounted file system.
type Server struct {
	*fuse.Server
	dir  string
	ring *ringServer // nil: requests come from /dev/fuse only
}

// Transport names how requests arrive: "io_uring" or "/dev/fuse".
func (s *Server) Transport() string {
	if s.ring != nil {
		return "io_uring"
	}
	return "/dev/fuse"
}

// Unmount unmounts the file system and waits for the request loops to end.
func (s *Server) Unmount() error {
	if s.ring == nil {
		return s.Server.Unmount()
	}
	// Mounted by us (go-fuse only knows the /dev/fd/N name): retry while
	// the kernel still sees the last files closing, as go-fuse does.
	var err error
	for try, delay := 0, 5*time.Millisecond; try < 6; try, delay = try+1, 2*delay {
		if err = unix.Unmount(s.dir, 0); err == nil || err == unix.EINVAL {
			err = nil
			break
		}
		time.Sleep(delay)
	}
	if err != nil {
		return fmt.Errorf("fusefs: unmount %s: %w", s.dir, err)
	}
	s.Wait()
	return nil
}

// Wait returns when the mount is gone and every request loop has ended.
func (s *Server) Wait() {
	s.Server.Wait()
	if s.ring != nil {
		s.ring.wait()
	}
}

func (o MountOptions) withDefaults() MountOptions {
	if o.MaxIO <= 0 {
		o.MaxIO = fuse.MAX_KERNEL_WRITE
	}
	if o.ReadAheadKB == 0 {
		o.ReadAheadKB = 1024
	}
	if o.MaxBackground <= 0 {
		o.MaxBackground = 64
	}
	if o.FsName == "" {
		o.FsName = "obdfs"
	}
	return o
}

// Mount mounts root at dir and returns once the kernel has the mount.
// Unmount with Server.Unmount (or umount(8)); Server.Wait returns when the
// mount is gone. The root's disks stay open: close them with Root.Close.
func Mount(dir string, root *Root, o MountOptions) (*Server, error) {
	o = o.withDefaults()
	ttl := time.Minute
	neg := time.Duration(0)
	opts := &fs.Options{
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &neg,
		MountOptions: fuse.MountOptions{
			FsName:        o.FsName,
			Name:          "obdfs",
			MaxWrite:      o.MaxIO,
			MaxReadAhead:  o.MaxIO,
			MaxBackground: o.MaxBackground,
			// Direct I/O from a loop device keeps many requests in
			// flight only when the kernel may send them asynchronously.
			ExtraCapabilities: fuse.CAP_ASYNC_DIO,
			DisableXAttrs:     true,
			// Replies come from memory (ReadResultData); splicing them
			// only adds a pipe, and a 1 MiB reply does not fit the
			// default pipe-max-size, which go-fuse logs per read.
			DisableSplice: true,
			Debug:         o.Debug,
			DirectMount:   os.Geteuid() == 0,
		},
	}
	// The kernel applies each file's owner and mode (Perm); with
	// AllowOther that is what lets qemu's user in and keeps others out.
	opts.Options = append(opts.Options, "default_permissions")
	opts.AllowOther = o.AllowOther
	var srv *Server
	switch o.URing {
	case "", "off":
	case "on", "auto":
		var err error
		if srv, err = mountURing(dir, root, opts, o); err != nil {
			if o.URing == "on" {
				return nil, fmt.Errorf("fusefs: mount %s with FUSE over io_uring: %w", dir, err)
			}
			root.log.Info("FUSE over io_uring not used; serving /dev/fuse", "mountpoint", dir, "why", err)
		}
	default:
		return nil, fmt.Errorf("fusefs: URing %q: want on, off or auto", o.URing)
	}
	if srv == nil {
		fsrv, err := fs.Mount(dir, root, opts)
		if err != nil {
			return nil, fmt.Errorf("fusefs: mount %s: %w", dir, err)
		}
		srv = &Server{Server: fsrv, dir: dir}
	}
	if o.ReadAheadKB > 0 {
		if err := setReadAhead(dir, o.ReadAheadKB); err != nil {
			root.log.Warn("cannot set FUSE readahead", "mountpoint", dir, "err", err)
		}
	}
	return srv, nil
}

// mountURing mounts dir itself (go-fuse gets the /dev/fuse descriptor as
// /dev/fd/N, so that the rings can use it too), asks for FUSE_OVER_IO_URING
// in the INIT reply and registers the queues. On an error after the mount it
// unmounts again.
func mountURing(dir string, root *Root, opts *fs.Options, o MountOptions) (*Server, error) {
	if ok, why := URingOffered(); !ok {
		return nil, why
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root (the daemon mounts the file system itself)")
	}
	mo := opts.MountOptions
	mo.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
	// go-fuse builds READDIRPLUS replies with an unexported switch; plain
	// READDIR is all a directory of a few disk files needs.
	mo.DisabledCapabilities |= fuse.CAP_READDIRPLUS
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, err
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	data := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", mo.MaxWrite),
	}
	if mo.AllowOther {
		data = append(data, "allow_other")
	}
	data = append(data, mo.Options...)
	if err := unix.Mount(mo.FsName, dir, "fuse."+mo.Name, unix.MS_NOSUID|unix.MS_NODEV, strings.Join(data, ",")); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount: %w", err)
	}
	mo.DirectMount = false
	rawFS := fs.NewNodeFS(root, opts)
	fsrv, err := fuse.NewServer(rawFS, fmt.Sprintf("/dev/fd/%d", fd), &mo)
	if err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		unix.Close(fd)
		return nil, err
	}
	go fsrv.Serve()
	srv := &Server{Server: fsrv, dir: dir}
	fail := func(err error) (*Server, error) {
		unix.Unmount(dir, unix.MNT_DETACH)
		srv.Wait()
		return nil, err
	}
	if err := fsrv.WaitMount(); err != nil {
		return fail(err)
	}
	if fsrv.KernelSettings().Flags64()&fuse.CAP_OVER_IO_URING == 0 {
		return fail(errors.New("the kernel did not offer FUSE_OVER_IO_URING in INIT"))
	}
	pages := (mo.MaxWrite + os.Getpagesize() - 1) / os.Getpagesize()
	rs, err := startRing(fd, rawFS, max(8192, pages*os.Getpagesize()), root.log)
	if err != nil {
		err = fmt.Errorf("registering the queues: %w", err)
		unix.Unmount(dir, unix.MNT_DETACH)
		fsrv.Wait()
		if rs != nil {
			rs.wait()
		}
		return nil, err
	}
	srv.ring = rs
	if err := pollHack(dir); err != nil {
		return fail(err)
	}
	root.log.Info("serving FUSE requests through io_uring", "mountpoint", dir, "rings", len(rs.queues), "per CPU", uringThreads, "depth", uringRingDepth)
	return srv, nil
}

// setReadAhead writes the bdi readahead of the mount at dir. The bdi of a
// FUSE mount is named after its anonymous device number.
func setReadAhead(dir string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	p := filepath.Join("/sys/class/bdi", fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)), "read_ahead_kb")
	return os.WriteFile(p, []byte(strconv.Itoa(kb)), 0)
}
