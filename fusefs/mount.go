package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
func Mount(dir string, root *Root, o MountOptions) (*fuse.Server, error) {
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
	srv, err := fs.Mount(dir, root, opts)
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount %s: %w", dir, err)
	}
	if o.ReadAheadKB > 0 {
		if err := setReadAhead(dir, o.ReadAheadKB); err != nil {
			root.log.Warn("cannot set FUSE readahead", "mountpoint", dir, "err", err)
		}
	}
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
