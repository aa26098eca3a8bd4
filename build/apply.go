package build

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrEscape classifies tar entries refused because their name or link target
// would leave the root (absolute, or with a ".." component).
var ErrEscape = errors.New("entry escapes the root")

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	// Other ".wh..wh." names are aufs bookkeeping (hard-link dirs): skipped.
	metaPrefix = ".wh..wh."
	xattrPAX   = "SCHILY.xattr."
)

// ApplyStats counts what a tar stream did.
type ApplyStats struct {
	Entries   int   // entries read (whiteouts included)
	Whiteouts int   // .wh. entries and opaque markers
	Bytes     int64 // file content bytes read from the tar
}

// Apply extracts an OCI layer tar into the directory root with the OCI
// image-spec layer rules, as an overlay of what root already holds:
// whiteouts (.wh.NAME) and opaque markers (.wh..wh..opq) remove what lower
// layers put there (never what this layer created), an entry replaces an
// existing one of another type, a directory entry over an existing directory
// only updates its metadata. Ownership is numeric, modes keep
// setuid/setgid/sticky, times are set to the nanosecond, xattrs from PAX
// SCHILY.xattr records, regular files are written sparse (zero 4 KiB blocks
// are skipped).
//
// Every path is resolved with openat2(RESOLVE_IN_ROOT), so symlinks met on
// the way (absolute or relative) are interpreted inside root as a container
// would see them, and nothing can be created outside root. Names that are
// absolute or contain ".." are refused with ErrEscape. name is used in
// errors.
func Apply(root string, r io.Reader, name string) (ApplyStats, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ApplyStats{}, fmt.Errorf("apply %s: open %s: %w", name, root, err)
	}
	defer unix.Close(fd)
	a := &applier{
		root:    fd,
		created: map[string]bool{},
		touched: map[string]bool{},
		parents: map[string][2]unix.Timespec{},
		buf:     make([]byte, 1<<20),
	}
	zt := &zeroTail{r: r}
	tr := tar.NewReader(zt)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			// Go's reader also ends quietly when the stream stops at a
			// header boundary: require the end-of-archive zero block, so a
			// cut-off layer is an error rather than a shorter tree.
			if zt.tail < 512 {
				return a.stats, fmt.Errorf("apply %s: the tar stops after %d entries without its end-of-archive marker (truncated?)", name, a.stats.Entries)
			}
			break
		}
		if err != nil {
			return a.stats, fmt.Errorf("apply %s: reading the tar after %d entries: %w", name, a.stats.Entries, err)
		}
		a.stats.Entries++
		if err := a.entry(hdr, tr); err != nil {
			return a.stats, fmt.Errorf("apply %s: entry %q: %w", name, hdr.Name, err)
		}
	}
	if err := a.finish(); err != nil {
		return a.stats, fmt.Errorf("apply %s: %w", name, err)
	}
	return a.stats, nil
}

type dirTimes struct {
	name  string
	times [2]unix.Timespec
}

type applier struct {
	root    int             // O_PATH fd of the root directory
	created map[string]bool // paths this layer created (whiteouts spare them)
	touched map[string]bool // created paths and their ancestors
	// parents are directories this layer changed without an entry of its
	// own: their times before the first change, restored at the end.
	parents map[string][2]unix.Timespec
	dirs    []dirTimes // directory entries: times set once all entries are in
	stats   ApplyStats
	buf     []byte
}

// cleanName turns a tar name into a path relative to the root ("" for the
// root itself), refusing absolute names and ".." components.
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute name %q", ErrEscape, name)
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("%w: %q has a \"..\" component", ErrEscape, name)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "/"), nil
}

func split(p string) (dir, base string) {
	dir, base = path.Split(p)
	return strings.TrimSuffix(dir, "/"), base
}

// openDir opens the directory rel (relative to the root, "" for the root)
// with symlinks resolved inside the root.
func (a *applier) openDir(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(a.root, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return -1, &os.PathError{Op: "openat2", Path: rel, Err: err}
	}
	return fd, nil
}

// mkdirAll opens directory rel, creating missing components (0755, owned by
// root) the way extractors do for tars that omit parent entries.
func (a *applier) mkdirAll(rel string) (int, error) {
	fd, err := a.openDir(rel)
	if err == nil || !errors.Is(err, unix.ENOENT) || rel == "" {
		return fd, err
	}
	dir, base := split(rel)
	pfd, err := a.mkdirAll(dir)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	a.noteParent(dir)
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil {
		if err == unix.EEXIST {
			return -1, fmt.Errorf("parent %q is a symlink to a directory missing from the root", rel)
		}
		return -1, &os.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	return a.openDir(rel)
}

// noteParent records the times of directory dir before this layer changes
// it, unless this layer has an entry for it (whose times win).
func (a *applier) noteParent(dir string) {
	if a.created[dir] {
		return
	}
	if _, ok := a.parents[dir]; ok {
		return
	}
	fd, err := a.openDir(dir)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return
	}
	a.parents[dir] = [2]unix.Timespec{st.Atim, st.Mtim}
}

func (a *applier) markCreated(p string) {
	a.created[p] = true
	for q := p; ; {
		a.touched[q] = true
		if q == "" {
			break
		}
		q, _ = split(q)
	}
}

func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := split(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		a.stats.Whiteouts++
		switch {
		case base == opaqueMarker:
			return a.opaque(dir)
		case strings.HasPrefix(base, metaPrefix):
			return nil
		}
		target := base[len(whiteoutPrefix):]
		if target == "." || target == ".." {
			return fmt.Errorf("%w: whiteout of %q", ErrEscape, target)
		}
		return a.whiteout(path.Join(dir, target))
	}
	if name == "" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the root can only be a directory (type %q)", hdr.Typeflag)
		}
		return a.metadata(a.root, ".", "", hdr)
	}
	pfd, err := a.mkdirAll(dir)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	a.noteParent(dir)

	var st unix.Stat_t
	exists := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	keepDir := exists && hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR
	if exists && !keepDir {
		if err := removeAt(pfd, base); err != nil {
			return err
		}
	}

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		n, err := a.writeFile(pfd, base, hdr, r)
		a.stats.Bytes += n
		if err != nil {
			return err
		}
	case tar.TypeDir:
		if !keepDir {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return &os.PathError{Op: "mkdir", Path: name, Err: err}
			}
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return &os.PathError{Op: "symlink", Path: name, Err: err}
		}
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		tdir, tbase := split(target)
		tfd, err := a.openDir(tdir)
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
		}
		err = unix.Linkat(tfd, tbase, pfd, base, 0)
		unix.Close(tfd)
		if err != nil {
			return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
		}
		// The inode keeps its own metadata (the target's).
		a.markCreated(name)
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode = unix.S_IFCHR
		case tar.TypeBlock:
			mode = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(pfd, base, mode|0o600, int(dev)); err != nil {
			return &os.PathError{Op: "mknod", Path: name, Err: err}
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	a.markCreated(name)
	return a.metadata(pfd, base, name, hdr)
}

// metadata applies owner, mode, xattrs and (for non-directories) times to
// base in directory pfd. Owner first: chown clears setuid/setgid and
// security.capability.
func (a *applier) metadata(pfd int, base, name string, hdr *tar.Header) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chown", Path: name, Err: err}
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: name, Err: err}
		}
	}
	if err := a.xattrs(pfd, base, name, hdr); err != nil {
		return err
	}
	mt := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	at := mt
	if !hdr.AccessTime.IsZero() {
		at = unix.NsecToTimespec(hdr.AccessTime.UnixNano())
	}
	if hdr.Typeflag == tar.TypeDir {
		a.dirs = append(a.dirs, dirTimes{name, [2]unix.Timespec{at, mt}})
		return nil
	}
	if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{at, mt}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: name, Err: err}
	}
	return nil
}

func (a *applier) xattrs(pfd int, base, name string, hdr *tar.Header) error {
	var keys []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPAX) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	// The parent is already resolved: reach the entry through its fd so the
	// path is not walked again, and without following a final symlink.
	p := "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base
	if base == "." {
		p = "/proc/self/fd/" + strconv.Itoa(pfd)
	}
	for _, k := range keys {
		attr := k[len(xattrPAX):]
		if err := unix.Lsetxattr(p, attr, []byte(hdr.PAXRecords[k]), 0); err != nil {
			// The kernel refuses user.* xattrs on symlinks and special
			// files; such a record cannot be honoured anywhere.
			special := hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA && hdr.Typeflag != tar.TypeDir
			if special && (err == unix.EPERM || err == unix.ENOTSUP) {
				continue
			}
			return fmt.Errorf("xattr %s on %s: %w", attr, name, err)
		}
	}
	return nil
}

// writeFile creates base with the entry's content, leaving all-zero 4 KiB
// blocks as holes.
func (a *applier) writeFile(pfd int, base string, hdr *tar.Header, r io.Reader) (int64, error) {
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, &os.PathError{Op: "create", Path: hdr.Name, Err: err}
	}
	f := os.NewFile(uintptr(fd), hdr.Name)
	defer f.Close()
	var off int64
	for off < hdr.Size {
		n, err := io.ReadFull(r, a.buf[:min(int64(len(a.buf)), hdr.Size-off)])
		if err != nil {
			return off, fmt.Errorf("content at %d of %d: %w", off, hdr.Size, err)
		}
		if err := writeSparse(f, a.buf[:n], off); err != nil {
			return off, err
		}
		off += int64(n)
	}
	if err := f.Truncate(hdr.Size); err != nil {
		return off, err
	}
	return off, f.Close()
}

var zeroBlock [4096]byte

// writeSparse writes p at off, skipping 4 KiB blocks that are all zeros.
func writeSparse(f *os.File, p []byte, off int64) error {
	for len(p) > 0 {
		i := 0
		for i < len(p) && bytes.Equal(p[i:min(i+len(zeroBlock), len(p))], zeroBlock[:min(len(zeroBlock), len(p)-i)]) {
			i += len(zeroBlock)
		}
		i = min(i, len(p))
		j := i
		for j < len(p) && !bytes.Equal(p[j:min(j+len(zeroBlock), len(p))], zeroBlock[:min(len(zeroBlock), len(p)-j)]) {
			j += len(zeroBlock)
		}
		j = min(j, len(p))
		if j > i {
			if _, err := f.WriteAt(p[i:j], off+int64(i)); err != nil {
				return err
			}
		}
		p, off = p[j:], off+int64(j)
	}
	return nil
}

// whiteout removes p, which a lower layer created.
func (a *applier) whiteout(p string) error {
	if a.created[p] {
		return nil // the spec: a whiteout never hides its own layer's entries
	}
	dir, base := split(p)
	pfd, err := a.openDir(dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return nil
	}
	a.noteParent(dir)
	return removeAt(pfd, base)
}

// opaque empties directory dir of what lower layers put there, keeping what
// this layer created (before or after the marker).
func (a *applier) opaque(dir string) error {
	fd, err := a.openDir(dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd)
	if err != nil {
		return fmt.Errorf("opaque %q: %w", dir, err)
	}
	a.noteParent(dir)
	for _, n := range names {
		p := path.Join(dir, n)
		switch {
		case a.created[p]:
		case a.touched[p]:
			// A lower directory this layer wrote into without an entry of its
			// own: its lower content is hidden too.
			if err := a.opaque(p); err != nil {
				return err
			}
		default:
			if err := removeAt(fd, n); err != nil {
				return err
			}
		}
	}
	return nil
}

func readDirNames(dfd int) ([]string, error) {
	fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// removeAt removes base in directory dfd, recursively for a directory,
// never following symlinks.
func removeAt(dfd int, base string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return &os.PathError{Op: "stat", Path: base, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(dfd, base, 0); err != nil {
			return &os.PathError{Op: "unlink", Path: base, Err: err}
		}
		return nil
	}
	fd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: base, Err: err}
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("%s/%w", base, err)
	}
	if err := unix.Unlinkat(dfd, base, unix.AT_REMOVEDIR); err != nil {
		return &os.PathError{Op: "rmdir", Path: base, Err: err}
	}
	return nil
}

// finish sets the times of directory entries, and restores those of
// directories changed without an entry, now that nothing changes them.
func (a *applier) finish() error {
	set := func(name string, t [2]unix.Timespec) error {
		dir, base := split(name)
		if name == "" {
			base = "."
		}
		pfd, err := a.openDir(dir)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		if err := unix.UtimesNanoAt(pfd, base, t[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "utimensat", Path: name, Err: err}
		}
		return nil
	}
	for d, t := range a.parents {
		if a.created[d] {
			continue
		}
		if err := set(d, t); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	for _, d := range a.dirs {
		if err := set(d.name, d.times); err != nil {
			return err
		}
	}
	return nil
}

// zeroTail counts the zero bytes at the end of what was read so far.
type zeroTail struct {
	r    io.Reader
	tail int64
}

func (z *zeroTail) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	i := n
	for i > 0 && p[i-1] == 0 {
		i--
	}
	if i == 0 {
		z.tail += int64(n)
	} else {
		z.tail = int64(n - i)
	}
	return n, err
}
