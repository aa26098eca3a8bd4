package image

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/tarwrap"
	"github.com/obdfs/obdfs/zfile"
)

// Layer is one read-only layer, opened through its containers.
type Layer struct {
	Name     string // as given by the user
	Identity string // cache identity: digest, or dev+inode+size+mtime of a local file
	Kind     string // "lsmt", "zfile+lsmt", "tar+zfile+lsmt", ...

	File  *lsmt.File    // the LSMT layer
	ZFile *zfile.Reader // nil when the layer is not compressed

	backing *countingReaderAt
	cache   *blockcache.Cache
	cacheID uint64
	closer  io.Closer
}

// countingReaderAt counts what is read from a layer's backing file or blob,
// for `obdfs stats` and for the shared-cache tests.
type countingReaderAt struct {
	r            io.ReaderAt
	reads, bytes atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.reads.Add(1)
	c.bytes.Add(int64(n))
	return n, err
}

// OpenLayerFile opens a local layer file: tar-wrapped or bare, ZFile or raw
// LSMT (committed or sealed).
func OpenLayerFile(path string, o Options) (*Layer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("layer %s: not a regular file", path)
	}
	id := fmt.Sprintf("file:%s:%d:%d", path, st.Size(), st.ModTime().UnixNano())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		// Device and inode, not path: two names of one file share blocks.
		id = fmt.Sprintf("file:%d:%d:%d:%d", sys.Dev, sys.Ino, st.Size(), st.ModTime().UnixNano())
	}
	l, err := OpenLayer(f, st.Size(), path, id, o)
	if err != nil {
		f.Close()
		return nil, err
	}
	l.closer = f
	return l, nil
}

// OpenLayer opens a layer from any io.ReaderAt of the given size (a file, a
// registry blob). identity keys the shared decoded-block cache: layers with
// the same identity must have the same content. The Layer does not own r.
func OpenLayer(r io.ReaderAt, size int64, name, identity string, o Options) (*Layer, error) {
	l := &Layer{Name: name, Identity: identity, backing: &countingReaderAt{r: r}}
	member, wrapped, err := tarwrap.Peel(l.backing, size)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", name, err)
	}
	var data io.ReaderAt = member
	if inv, ok := r.(invalidator); ok {
		_, base, _ := member.Outer()
		data = &memberSection{SectionReader: member, base: base, inv: inv}
	}
	dataSize := member.Size()
	kind := ""
	if wrapped {
		kind = "tar+"
	}
	if zfile.Is(member) {
		opts := []zfile.Option{zfile.WithName(name)}
		if o.Cache != nil {
			opts = append(opts, zfile.WithCache(o.Cache, identity))
			l.cache, l.cacheID = o.Cache, o.Cache.LayerID(identity)
		}
		zr, err := zfile.NewReader(data, dataSize, opts...)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", name, err)
		}
		l.ZFile, data, dataSize = zr, zr, zr.Size()
		kind += "zfile+"
	}
	if !lsmt.IsLSMT(data) {
		return nil, fmt.Errorf("layer %s: not an overlaybd layer (no LSMT header after peeling %q)", name, kind)
	}
	f, err := lsmt.NewFile(data, dataSize, name)
	if err != nil {
		return nil, err
	}
	l.File = f
	l.Kind = kind + "lsmt"
	return l, nil
}

// Info reports the layer's counters.
func (l *Layer) Info() disk.LayerInfo {
	li := disk.LayerInfo{
		Name: l.Name, Identity: l.Identity, Kind: l.Kind, ReadOnly: true,
		BackingReads: l.backing.reads.Load(), BackingBytes: l.backing.bytes.Load(),
	}
	if l.cache != nil {
		if st := l.cache.Stats(l.cacheID); st != nil {
			li.CacheHits, li.CacheMisses = st.Hits.Load(), st.Misses.Load()
		}
	}
	return li
}

// Close closes the file the layer was opened from, if it owns one.
func (l *Layer) Close() error {
	if l.closer != nil {
		return l.closer.Close()
	}
	return nil
}
