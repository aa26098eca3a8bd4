package image

import (
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/internal/regfile"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/remote"
	"github.com/obdfs/obdfs/zfile"
)

// Layer is one read-only layer, opened through its containers.
type Layer struct {
	Name     string // as given by the user
	Identity string // cache identity: digest, or dev+inode+size+mtime of a local file
	Kind     string // "lsmt", "zfile+lsmt", "tar+zfile+lsmt", ...

	File  *lsmt.File    // the LSMT layer
	ZFile *zfile.Reader // nil when the layer is not compressed

	lf      *layerfile.File
	cache   *blockcache.Cache
	cacheID uint64
	closer  io.Closer
	blob    *remote.Blob // a registry layer's blob, else nil
}

// OpenLayerFile opens a local layer file: tar-wrapped or bare, ZFile or raw
// LSMT (committed or sealed).
func OpenLayerFile(path string, o Options) (*Layer, error) {
	f, st, err := regfile.OpenStat(path, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", path, err)
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
	lf, err := layerfile.OpenLayer(r, size, layerfile.Options{Name: name, Cache: o.Cache, CacheKey: identity})
	if err != nil {
		return nil, err
	}
	l := &Layer{Name: name, Identity: identity, Kind: lf.Kind.String(), File: lf.LSMT, ZFile: lf.ZFile, lf: lf}
	if o.Cache != nil && lf.ZFile != nil {
		l.cache, l.cacheID = o.Cache, o.Cache.LayerID(identity)
	}
	return l, nil
}

// Info reports the layer's counters.
func (l *Layer) Info() disk.LayerInfo {
	li := disk.LayerInfo{Name: l.Name, Identity: l.Identity, Kind: l.Kind, ReadOnly: true}
	li.BackingReads, li.BackingBytes = l.lf.BackingReads()
	if l.cache != nil {
		if st := l.cache.Stats(l.cacheID); st != nil {
			li.CacheHits, li.CacheMisses = st.Hits.Load(), st.Misses.Load()
		}
	}
	if l.blob != nil {
		st := l.blob.Stats()
		li.Fetch = &disk.FetchInfo{
			Size: l.blob.Size(), Cached: st.Cached, Verified: st.Verified,
			Fetches: st.Fetches, FetchedBytes: st.FetchedBytes,
			AheadFetches: st.AheadFetches, AheadBytes: st.AheadBytes, AheadHits: st.AheadHits,
			BackgroundBytes: st.BackgroundBytes, Background: st.Background, Replay: st.Replay,
		}
	}
	return li
}

// Close ends the layer's registration with the shared cache and closes the
// file the layer was opened from, if it owns one.
func (l *Layer) Close() error {
	l.lf.Close() // the ZFile's cache registration; lf owns no file here
	if l.closer != nil {
		return l.closer.Close()
	}
	return nil
}
