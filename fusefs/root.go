package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/obdfs/obdfs/disk"
)

// Root is the mount's directory. Its children are the stack files; it
// holds no other entries. Add and Remove may be called at any time, from
// outside FUSE request handlers.
type Root struct {
	fs.Inode

	log *slog.Logger

	mu      sync.Mutex
	files   map[string]*File
	nextIno uint64
	mounted bool
}

var (
	_ = (fs.NodeOnAdder)((*Root)(nil))
	_ = (fs.NodeGetattrer)((*Root)(nil))
	_ = (fs.NodeStatfser)((*Root)(nil))
)

// NewRoot returns an empty root. A nil logger means slog.Default().
func NewRoot(log *slog.Logger) *Root {
	if log == nil {
		log = slog.Default()
	}
	return &Root{log: log, files: map[string]*File{}, nextIno: 2}
}

// OnAdd is called by go-fuse once the root is attached to the mount.
func (r *Root) OnAdd(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mounted = true
	for name, f := range r.files {
		r.attach(ctx, name, f)
	}
}

// attach creates the inode of f; go-fuse can only make inodes once the root
// belongs to a mount, so files added before that are attached in OnAdd.
func (r *Root) attach(ctx context.Context, name string, f *File) {
	ino := r.nextIno
	r.nextIno++
	ch := r.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino})
	r.AddChild(name, ch, false)
}

func (r *Root) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o755
	out.Nlink = 2
	return 0
}

func (r *Root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	r.mu.Lock()
	defer r.mu.Unlock()
	var blocks uint64
	for _, f := range r.files {
		blocks += uint64(f.size+4095) / 4096
	}
	out.Bsize, out.Frsize = 4096, 4096
	out.Blocks = blocks
	out.Files = uint64(len(r.files))
	out.NameLen = 255
	return 0
}

// CheckName reports whether name can be a stack file name.
func CheckName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 ||
		strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %q", ErrName, name)
	}
	return nil
}

// Perm is the owner and permission bits of a served file.
type Perm struct {
	Uid, Gid uint32
	// Mode holds the permission bits; 0 means 0644. A read-only disk never
	// gets write bits.
	Mode uint32
}

// DefaultPerm is the calling process's user and group with mode 0644.
func DefaultPerm() Perm {
	return Perm{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid()), Mode: 0o644}
}

func (p Perm) mode(ro bool) uint32 {
	m := p.Mode & 0o7777
	if m == 0 {
		m = 0o644
	}
	if ro {
		m &^= 0o222
	}
	return m
}

// Add serves d as the file NAME, owned by the calling process with mode
// 0644 (0444 read-only); see AddPerm.
func (r *Root) Add(name string, d disk.Disk) (*File, error) {
	return r.AddPerm(name, d, DefaultPerm())
}

// AddPerm serves d as the file NAME with the given owner and mode. The root
// owns d from then on: Remove and Close flush and close it. On error d is
// not closed.
func (r *Root) AddPerm(name string, d disk.Disk, p Perm) (*File, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	if _, ok := r.files[name]; ok {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrExists, name)
	}
	f := &File{name: name, d: d, size: d.Size(), ro: d.ReadOnly(), perm: p, mtime: time.Now(), log: r.log}
	r.files[name] = f
	if r.mounted {
		r.attach(context.Background(), name, f)
	}
	mounted := r.mounted
	r.mu.Unlock()
	if mounted {
		// A lookup that failed before the add may be cached as negative.
		r.NotifyEntry(name)
	}
	return f, nil
}

// Remove stops serving NAME, then flushes and closes its disk. An open file
// makes it fail with ErrBusy unless force is set; with force, requests on
// the open file fail with EIO from then on.
func (r *Root) Remove(name string, force bool) error {
	r.mu.Lock()
	f, ok := r.files[name]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if n := f.opens.Load(); n > 0 && !force {
		r.mu.Unlock()
		return fmt.Errorf("%w: %q (%d open)", ErrBusy, name, n)
	}
	delete(r.files, name)
	mounted := r.mounted
	if mounted {
		r.RmChild(name)
	}
	r.mu.Unlock()
	if mounted {
		r.NotifyEntry(name)
	}
	if err := f.close(); err != nil {
		return fmt.Errorf("fusefs: close stack %q: %w", name, err)
	}
	return nil
}

// Files returns the served files, sorted by name.
func (r *Root) Files() []*File {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*File, 0, len(r.files))
	for _, f := range r.files {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *File) int { return strings.Compare(a.name, b.name) })
	return out
}

// File returns the file NAME, or nil.
func (r *Root) File(name string) *File {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.files[name]
}

// Flush flushes every writable disk.
func (r *Root) Flush() error {
	var errs []error
	for _, f := range r.Files() {
		if err := f.flush(); err != nil {
			errs = append(errs, fmt.Errorf("fusefs: flush stack %q: %w", f.name, err))
		}
	}
	return errors.Join(errs...)
}

// Close flushes and closes every disk and forgets them. Call it after the
// mount is gone; requests still arriving get EIO.
func (r *Root) Close() error {
	r.mu.Lock()
	files := r.files
	r.files = map[string]*File{}
	r.mu.Unlock()
	var errs []error
	for name, f := range files {
		if err := f.close(); err != nil {
			errs = append(errs, fmt.Errorf("fusefs: close stack %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
