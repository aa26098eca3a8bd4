package layerfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/internal/regfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/tarwrap"
	"github.com/obdfs/obdfs/zfile"
)

// Content is what a file holds once its containers are peeled.
type Content uint8

const (
	// Unknown is anything without an LSMT header (e.g. a ZFile of some
	// other file).
	Unknown Content = iota
	// Committed is a read-only layer written by a commit (header flags 0x7).
	Committed
	// Sealed is a writable layer's data file closed in place with an index
	// and trailer (overlaybd.sealed; header flags 0x3).
	Sealed
	// RWData is a writable layer's data file.
	RWData
	// SparseRWData is a sparse writable layer's data file.
	SparseRWData
	// RWIndex is a writable layer's index log.
	RWIndex
	// Empty is a zero-byte file (the unused index file of a sparse layer).
	Empty
)

var contentNames = [...]string{
	Unknown:      "unknown",
	Committed:    "committed read-only layer",
	Sealed:       "sealed read-only layer",
	RWData:       "writable layer data file",
	SparseRWData: "sparse writable layer data file",
	RWIndex:      "writable layer index file",
	Empty:        "empty file",
}

func (c Content) String() string {
	if int(c) < len(contentNames) {
		return contentNames[c]
	}
	return fmt.Sprintf("content(%d)", uint8(c))
}

// ReadOnly reports whether the content is a read-only layer that lsmt.File
// (and so a stack) can read.
func (c Content) ReadOnly() bool { return c == Committed || c == Sealed }

// Kind is what a file is: its containers and their content.
type Kind struct {
	Tar     bool // wrapped in a tar member
	ZFile   bool // compressed as a ZFile
	Content Content
}

// Containers names the containers, outermost first, joined by "+": "",
// "tar", "zfile" or "tar+zfile".
func (k Kind) Containers() string {
	var s []string
	if k.Tar {
		s = append(s, "tar")
	}
	if k.ZFile {
		s = append(s, "zfile")
	}
	return strings.Join(s, "+")
}

// String is the short form used in `obdfs stack ls` and stats: the
// containers and "lsmt" for an LSMT file ("tar+zfile+lsmt"), the
// containers alone otherwise.
func (k Kind) String() string {
	c := k.Containers()
	switch {
	case k.Content == Unknown || k.Content == Empty:
		if c == "" {
			return k.Content.String()
		}
		return c
	case c == "":
		return "lsmt"
	}
	return c + "+lsmt"
}

// Options configure Open.
type Options struct {
	// Name is used in every error (usually the path or blob reference).
	Name string
	// Cache, if not nil, serves a ZFile's decoded blocks; CacheKey
	// identifies the content (files with the same key must hold the same
	// bytes).
	Cache    *blockcache.Cache
	CacheKey string
}

// File is an opened layer file.
type File struct {
	Name string
	Kind Kind
	Size int64 // of the whole input
	// Member is the tar member, or the whole input when not wrapped.
	Member *io.SectionReader
	// ZFile is the decompressing reader, nil when not compressed.
	ZFile *zfile.Reader
	// Data is the innermost byte stream (what the LSMT header is read
	// from) and DataSize its length.
	Data     io.ReaderAt
	DataSize int64
	// LSMT is the read-only layer; nil unless Kind.Content.ReadOnly().
	LSMT *lsmt.File

	backing *counter
	closer  io.Closer
}

// counter counts what is read from a layer's backing data: the one place
// where reads of a read-only layer are counted (for `obdfs stats`).
type counter struct {
	r            io.ReaderAt
	reads, bytes atomic.Int64
}

func (c *counter) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.reads.Add(1)
	c.bytes.Add(int64(n))
	return n, err
}

// BackingReads reports the read calls made on the backing data since Open
// and the bytes they returned.
func (f *File) BackingReads() (reads, bytes int64) {
	return f.backing.reads.Load(), f.backing.bytes.Load()
}

// Close ends the ZFile reader's registration with the cache (see
// zfile.Reader.Close) and closes the file Open opened by path (OpenPath); a
// File opened on a caller's io.ReaderAt does not own it.
func (f *File) Close() error {
	if f.ZFile != nil {
		f.ZFile.Close()
	}
	if f.closer != nil {
		return f.closer.Close()
	}
	return nil
}

// Open peels the containers of the size bytes in r and classifies the
// content. Bad containers (a truncated tar member, a ZFile with a broken
// index) and a read-only LSMT layer that fails its checks are errors;
// content that is not LSMT at all is not (Kind.Content is Unknown): use
// OpenLayer to require a read-only layer. r is not owned by the File.
func Open(r io.ReaderAt, size int64, o Options) (*File, error) {
	name := o.Name
	f := &File{Name: name, Size: size, backing: &counter{r: r}}
	if size == 0 {
		f.Member = io.NewSectionReader(f.backing, 0, 0)
		f.Data, f.Kind.Content = f.Member, Empty
		return f, nil
	}
	member, wrapped, err := tarwrap.Peel(f.backing, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	f.Member, f.Kind.Tar = member, wrapped
	f.Data, f.DataSize = member, member.Size()
	if zfile.Is(member) {
		var data io.ReaderAt = member
		if inv, ok := r.(zfile.Invalidator); ok {
			_, base, _ := member.Outer()
			data = &invalidatingSection{SectionReader: member, base: base, inv: inv}
		}
		opts := []zfile.Option{zfile.WithName(name)}
		var cache *blockcache.Layer
		if o.Cache != nil {
			// One reader of the content until f.Close (zfile.Reader.Close).
			cache = o.Cache.Open(o.CacheKey)
			opts = append(opts, zfile.WithCache(cache))
		}
		zr, err := zfile.NewReader(data, member.Size(), opts...)
		if err != nil {
			if cache != nil {
				cache.Close()
			}
			return nil, err // names the file
		}
		f.ZFile, f.Kind.ZFile = zr, true
		f.Data, f.DataSize = zr, zr.Size()
	}
	h, ok, err := readLSMTHeader(f.Data, f.DataSize, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	switch {
	case !ok || !h.IsHeader():
		f.Kind.Content = Unknown
		return f, nil
	case !h.IsData():
		f.Kind.Content = RWIndex
		return f, nil
	}
	t, ok, err := readLSMTHeader(f.Data, f.DataSize, f.DataSize-lsmt.HeaderSize)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sealed := f.DataSize >= 2*lsmt.HeaderSize && ok && !t.IsHeader() && t.IsSealed()
	switch {
	case h.IsSealed():
		// A commit's header: lsmt.NewFile checks the rest and names what
		// is wrong (a missing trailer, a bad index).
		f.Kind.Content = Committed
	case sealed:
		f.Kind.Content = Sealed
	case h.IsSparse():
		f.Kind.Content = SparseRWData
		return f, nil
	default:
		f.Kind.Content = RWData
		return f, nil
	}
	if f.LSMT, err = lsmt.NewFile(f.Data, f.DataSize, name); err != nil {
		f.Close()
		return nil, err // names the file
	}
	return f, nil
}

// OpenLayer is Open for a read-only layer: anything else is an error
// naming what the file is instead.
func OpenLayer(r io.ReaderAt, size int64, o Options) (*File, error) {
	f, err := Open(r, size, o)
	if err != nil {
		return nil, err
	}
	if err := f.needLayer(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *File) needLayer() error {
	switch c := f.Kind.Content; {
	case c.ReadOnly():
		return nil
	case c == Unknown && f.Kind.Containers() != "":
		return fmt.Errorf("%s: not an overlaybd layer (no LSMT header inside the %s container)", f.Name, f.Kind.Containers())
	case c == Unknown:
		return fmt.Errorf("%s: not an overlaybd layer (no tar, ZFile or LSMT magic)", f.Name)
	default:
		return fmt.Errorf("%s: not a read-only layer: %s (commit it first)", f.Name, c)
	}
}

// OpenPath opens the file at path (any content, like Open); Close closes it.
func OpenPath(path string, o Options) (*File, error) {
	return openPath(path, o, Open)
}

// OpenLayerPath opens the read-only layer at path (like OpenLayer); Close
// closes it.
func OpenLayerPath(path string, o Options) (*File, error) {
	return openPath(path, o, OpenLayer)
}

func openPath(path string, o Options, open func(io.ReaderAt, int64, Options) (*File, error)) (*File, error) {
	if o.Name == "" {
		o.Name = path
	}
	fd, st, err := regfile.OpenStat(path, os.O_RDONLY) // never blocks on a FIFO
	if err != nil {
		return nil, err
	}
	f, err := open(fd, st.Size(), o)
	if err != nil {
		fd.Close()
		return nil, err
	}
	f.closer = fd
	return f, nil
}

// readLSMTHeader reads the header or trailer at off; ok is false when there
// is none (too short or no magic). A failed read is an error, not "no
// header": a refused connection must not be reported as a wrong format.
func readLSMTHeader(r io.ReaderAt, size, off int64) (h lsmt.Header, ok bool, err error) {
	if off < 0 || off+lsmt.HeaderSize > size {
		return h, false, nil
	}
	var b [lsmt.HeaderSize]byte
	if n, err := r.ReadAt(b[:], off); n < len(b) {
		if err != nil && !errors.Is(err, io.EOF) {
			return h, false, fmt.Errorf("reading an LSMT header at %d: %w", off, err)
		}
		return h, false, nil
	}
	h, perr := lsmt.ParseHeader(b[:])
	return h, perr == nil && h.MagicOK(), nil
}

// invalidatingSection is the tar member as a section of backing data that
// forwards Invalidate with the member's offset added, so the ZFile reader
// can ask a registry blob to refetch a block that failed its CRC.
type invalidatingSection struct {
	*io.SectionReader
	base int64
	inv  zfile.Invalidator
}

func (m *invalidatingSection) Invalidate(off, length int64) error {
	return m.inv.Invalidate(m.base+off, length)
}
