package zfile

import "github.com/obdfs/obdfs/blockcache"

// cacheMode is how a test Reader uses a decoded-block cache: none, its own
// (the only reader of the layer: whole blocks bypass the cache) or shared
// (another reader has the layer open: every block goes through the cache).
type cacheMode int

const (
	noCache cacheMode = iota
	ownCache
	sharedCache
)

var cacheModes = []cacheMode{noCache, ownCache, sharedCache}

func (m cacheMode) String() string { return [...]string{"none", "own", "shared"}[m] }

// opts returns the Reader options of the mode, with a new cache of size bytes.
func (m cacheMode) opts(size int64, layer string) []Option {
	if m == noCache {
		return nil
	}
	c := blockcache.New(size)
	if m == sharedCache {
		c.Open(layer) // the other reader
	}
	return []Option{WithCache(c.Open(layer))}
}
