package disk

// LayerInfo describes one layer of a layered disk, for `obdfs stack ls`
// and `obdfs stats`.
type LayerInfo struct {
	Name     string // file path or blob reference, as given by the user
	Identity string // cache identity: content digest where known, else dev+inode
	Kind     string // e.g. "lsmt", "zfile+lsmt", "tar+zfile+lsmt", "rw"
	ReadOnly bool

	// Counters since the layer was opened (shared by every stack using it).
	BackingReads int64 // read calls on the layer's backing file or blob
	BackingBytes int64 // bytes read from the backing file or blob
	CacheHits    int64 // decoded-block cache hits (compressed layers)
	CacheMisses  int64 // decoded-block cache misses (blocks decoded)

	Fetch *FetchInfo `json:",omitempty"` // a layer read lazily from a registry, else nil
}

// FetchInfo are the counters of a layer fetched lazily from a registry.
type FetchInfo struct {
	Size            int64  // blob bytes
	Cached          int64  // of them, in the persistent cache
	Verified        bool   // the cached blob is complete and matched its digest
	Fetches         int64  // range GETs
	FetchedBytes    int64  // bytes received
	AheadFetches    int64  // of the GETs, readahead and trace replay
	AheadBytes      int64  // of the bytes, fetched ahead of readers
	AheadHits       int64  // chunks fetched ahead that a reader then used
	BackgroundBytes int64  // of the bytes, fetched by the background download
	Background      string // background download state ("" when off)
	Replay          string // trace replay state ("" when none)
}

// Layered is implemented by disks made of layers (an LSMT stack).
type Layered interface {
	Layers() []LayerInfo // bottom first; the writable upper, if any, last
}
