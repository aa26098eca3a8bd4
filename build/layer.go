package build

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/fusefs"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/loopdev"
	"github.com/obdfs/obdfs/lsmt"
)

// DefaultVirtualSize is the virtual size of a first layer, as
// accelerated-container-image's converter uses: 64 GiB, sparse.
const DefaultVirtualSize = 64 << 30

// ErrNotRoot is returned when the process cannot mount (FUSE, loop, ext4).
var ErrNotRoot = errors.New("building a layer needs root: it serves the layer over FUSE, attaches a loop device and mounts ext4 (run as root)")

// mkfsArgs are accelerated-container-image's defaults for ext4: no journal
// (the layer is written once), one block group per flex group; no discard at
// mkfs time (a fresh layer reads as zeros already).
var mkfsArgs = []string{"-q", "-F", "-O", "^has_journal,sparse_super,flex_bg", "-G", "1", "-E", "nodiscard"}

// Options configure NewLayer.
type Options struct {
	// Base is the stack below the new layer (read-only layers); nil for a
	// first layer, which gets a new ext4 filesystem.
	Base *image.Stack
	// VirtualSize of a first layer in bytes (default DefaultVirtualSize);
	// ignored over a base, whose size the layer inherits.
	VirtualSize int64
	// UUID of the new layer ("" = random). Its parent is the base's top.
	UUID string
	// WorkDir holds the writable layer and mount points (default
	// os.TempDir()); a private directory is made inside and removed by Close.
	WorkDir string
	Log     *slog.Logger
}

// Layer is a writable layer over a base stack, served in-process over FUSE,
// attached to a loop device, with its ext4 filesystem mounted at Root().
// Write into Root() (Apply does), then Commit; Close releases everything.
type Layer struct {
	log      *slog.Logger
	dir      string // private work dir
	fsDir    string // ext4 mount point
	rw       *lsmt.RWFile
	uuid     string
	parent   string
	froot    *fusefs.Root
	srv      *fusefs.Server
	fuseDir  string
	loop     *loopdev.Device
	mounted  bool
	unmapped bool // filesystem, loop and FUSE are down
}

// NewLayer creates the writable layer and mounts its filesystem.
func NewLayer(o Options) (_ *Layer, err error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	dir, err := os.MkdirTemp(o.WorkDir, "obdfs-build")
	if err != nil {
		return nil, err
	}
	l := &Layer{log: log, dir: dir, fsDir: filepath.Join(dir, "fs"), fuseDir: filepath.Join(dir, "fuse")}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	for _, d := range []string{l.fsDir, l.fuseDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	var lowers []*lsmt.File
	if o.Base != nil {
		if o.Base.Upper() != nil {
			return nil, fmt.Errorf("build: base %s has a writable upper layer; give committed layers", o.Base.Spec)
		}
		for _, lo := range o.Base.Lowers() {
			lowers = append(lowers, lo.File)
		}
	}
	co := lsmt.CreateOptions{UUID: o.UUID}
	first := len(lowers) == 0
	if first {
		co.VirtualSize = o.VirtualSize
		if co.VirtualSize == 0 {
			co.VirtualSize = DefaultVirtualSize
		}
	} else {
		co.ParentUUID = lowers[len(lowers)-1].UUID()
	}
	l.rw, err = lsmt.Create(filepath.Join(dir, "layer.data"), filepath.Join(dir, "layer.index"), co)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	l.uuid, l.parent = l.rw.UUID(), co.ParentUUID
	st, err := lsmt.NewStack(lowers, l.rw)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if st.Size() == 0 {
		return nil, errors.New("build: the base stack has no virtual size")
	}
	l.froot = fusefs.NewRoot(log)
	if _, err := l.froot.Add("layer", &upperDisk{Stack: st}); err != nil {
		return nil, err // l.rw is closed by Close: the root did not take it
	}
	l.srv, err = fusefs.Mount(l.fuseDir, l.froot, fusefs.MountOptions{FsName: "obdfs-build", ReadAheadKB: -1})
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	file := filepath.Join(l.fuseDir, "layer")
	dev, err := loopdev.Attach(file, loopdev.Options{Mode: loopdev.ReadWrite, DirectIO: true})
	if err != nil {
		return nil, fmt.Errorf("build: loop device on %s: %w", file, err)
	}
	l.loop = dev
	if first {
		out, err := exec.Command("mkfs.ext4", append(append([]string{}, mkfsArgs...), dev.Path)...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("build: mkfs.ext4 %s: %w: %s", dev.Path, err, strings.TrimSpace(string(out)))
		}
	}
	// noinit_itable: a fresh layer reads as zeros already, and the lazy
	// inode-table zeroing thread would only add writes, at no fixed time.
	if err := unix.Mount(dev.Path, l.fsDir, "ext4", 0, "noinit_itable"); err != nil {
		return nil, fmt.Errorf("build: mount ext4 from %s (base %s): %w", dev.Path, baseName(o.Base), err)
	}
	l.mounted = true
	return l, nil
}

func baseName(s *image.Stack) string {
	if s == nil {
		return "none"
	}
	return s.Spec
}

// upperDisk serves the stack but closes only the writable layer: the base's
// layer files belong to the caller.
type upperDisk struct{ *lsmt.Stack }

func (d *upperDisk) Close() error {
	return errors.Join(d.Stack.Flush(), d.Stack.Upper().Close())
}

var _ disk.Disk = (*upperDisk)(nil)

// Root is the mounted filesystem of the layer.
func (l *Layer) Root() string { return l.fsDir }

// UUID is the new layer's UUID; ParentUUID the base's top ("" for none).
func (l *Layer) UUID() string       { return l.uuid }
func (l *Layer) ParentUUID() string { return l.parent }

// Apply extracts a layer tar into the filesystem (see the package Apply).
func (l *Layer) Apply(r io.Reader, name string) (ApplyStats, error) {
	return Apply(l.fsDir, r, name)
}

// unmap unmounts the filesystem, detaches the loop device and stops FUSE,
// which flushes and closes the writable layer.
// With force (Close after a failure), a busy filesystem is detached lazily
// so that nothing stays mounted under the work directory.
func (l *Layer) unmap(force bool) error {
	if l.unmapped {
		return nil
	}
	var errs []error
	if l.mounted {
		if err := unix.Unmount(l.fsDir, 0); err != nil {
			if !force {
				return fmt.Errorf("build: unmount %s: %w", l.fsDir, err)
			}
			errs = append(errs, fmt.Errorf("build: unmount %s: %w (detached lazily)", l.fsDir, err))
			if err := unix.Unmount(l.fsDir, unix.MNT_DETACH); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		l.mounted = false
	}
	if l.loop != nil {
		// Device.Detach leaves the number alone unless it still serves our
		// FUSE file: someone else's stale detach may have freed it (it
		// was mounted, so it turned autoclear) and another process may
		// own it by now.
		if _, err := l.loop.Detach(); err != nil && !errors.Is(err, loopdev.ErrNotLoop) {
			errs = append(errs, fmt.Errorf("build: detach %s: %w", l.loop.Path, err))
		}
		l.loop = nil
	}
	if l.srv != nil {
		// The loop driver drops its reference to the FUSE file shortly
		// after the detach; until then the unmount is EBUSY.
		var err error
		for i := 0; i < 100; i++ {
			if err = l.srv.Unmount(); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("build: unmount FUSE %s: %w", l.fuseDir, err))
			unix.Unmount(l.fuseDir, unix.MNT_DETACH)
		}
		l.srv.Wait()
		l.srv = nil
	}
	if l.froot != nil && l.froot.File("layer") != nil {
		errs = append(errs, l.froot.Close()) // flushes and closes the upper
		l.froot = nil
		l.rw = nil
	} else if l.rw != nil {
		errs = append(errs, l.rw.Close())
		l.rw = nil
	}
	l.unmapped = true
	return errors.Join(errs...)
}

// CommitArgs name the committed layer.
type CommitArgs = lsmt.CommitArgs

// Commit unmounts everything and writes the committed layer to w (raw LSMT;
// the caller chooses the containers). The layer's own UUID and parent are
// used unless args set them.
func (l *Layer) Commit(w io.Writer, args CommitArgs) (int64, error) {
	if err := l.unmap(false); err != nil {
		return 0, err
	}
	rw, err := lsmt.OpenRW(filepath.Join(l.dir, "layer.data"), filepath.Join(l.dir, "layer.index"))
	if err != nil {
		return 0, fmt.Errorf("build: reopen the writable layer: %w", err)
	}
	defer rw.Close()
	if args.UUID == "" {
		args.UUID = l.uuid
	}
	n, err := lsmt.Commit(w, rw, args)
	if err != nil {
		return n, fmt.Errorf("build: commit: %w", err)
	}
	return n, nil
}

// Close tears down whatever is still up and removes the work directory.
func (l *Layer) Close() error {
	err := l.unmap(true)
	if l.dir != "" && !l.unmapped {
		// Something is still mounted below: leave the files alone.
		return fmt.Errorf("%w; %s left in place", err, l.dir)
	}
	if l.dir != "" {
		err = errors.Join(err, os.RemoveAll(l.dir))
		l.dir = ""
	}
	return err
}

// Build makes one committed layer file at out from the tar stream r (see
// Apply) over o.Base: the whole engine in one call.
func Build(out string, r io.Reader, name string, o Options, args CommitArgs, wo layerfile.WriteOptions) (ApplyStats, error) {
	l, err := NewLayer(o)
	if err != nil {
		return ApplyStats{}, err
	}
	st, err := l.Apply(r, name)
	if err == nil {
		err = l.CommitFile(out, args, wo)
	}
	return st, errors.Join(err, l.Close())
}

// CommitFile commits the layer (see Commit) into the layer file path
// through the containers o chooses.
func (l *Layer) CommitFile(path string, args CommitArgs, o layerfile.WriteOptions) error {
	return layerfile.Write(path, o, func(w io.Writer) error {
		_, err := l.Commit(w, args)
		return err
	})
}
