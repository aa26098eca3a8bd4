// Package blockcache is the decoded-block cache shared by every stack of an
// obdfs daemon. A block of a layer (identified by content digest where known,
// else device and inode) is fetched and decompressed once, however many
// stacks read it: concurrent misses on the same block wait for one fill.
//
// The cache is bounded in bytes and evicts least-recently-used blocks. Hits
// copy out under a shard lock and allocate nothing; buffers of evicted blocks
// go back to a pool, which is safe because no reference to them escapes a lock.
package blockcache

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Key names one block of one layer.
type Key struct {
	Layer uint64 // from LayerID
	Block int64
}

const shardCount = 64 // power of two

// Cache is safe for concurrent use. The zero value is not usable; call New.
type Cache struct {
	shards   [shardCount]shard
	maxBytes int64
	arena    *arena // block buffers

	mu      sync.Mutex        // guards ids and names on registration
	ids     map[string]uint64 // identity -> id
	layers  atomic.Pointer[[]*LayerStats]
	nextIDs uint64
}

// LayerStats are the counters of one layer identity. Fields are updated
// atomically; read them with Load.
type LayerStats struct {
	Identity string
	Hits     atomic.Int64
	Misses   atomic.Int64 // fills started
	Fills    atomic.Int64 // bytes decoded into the cache
	Errors   atomic.Int64 // failed fills
	// Direct counts whole blocks a reader decoded straight into its own
	// buffer without caching them (see Shared).
	Direct atomic.Int64

	opens atomic.Int64 // readers between Open and Close
}

type entry struct {
	key        Key
	buf        []byte // decoded block, len = decoded length; nil while loading
	done       chan struct{}
	err        error
	prev, next *entry // LRU list, most recent at head
	loading    bool
}

type shard struct {
	arena      *arena
	mu         sync.Mutex
	m          map[Key]*entry
	head, tail *entry
	bytes      int64
	_          [32]byte // keep shards on separate cache lines
}

// New returns a cache holding at most maxBytes of decoded blocks (at least
// one block per shard is kept whatever the bound).
func New(maxBytes int64) *Cache {
	c := &Cache{maxBytes: maxBytes, ids: map[string]uint64{}, arena: newArena()}
	for i := range c.shards {
		c.shards[i].m = map[Key]*entry{}
		c.shards[i].arena = c.arena
	}
	empty := []*LayerStats{}
	c.layers.Store(&empty)
	return c
}

// MaxBytes is the configured bound.
func (c *Cache) MaxBytes() int64 { return c.maxBytes }

// LayerID returns the small stable id of a layer identity, registering it on
// first use. Two opens of the same layer (same digest, or same dev+inode)
// must pass the same identity to share blocks.
func (c *Cache) LayerID(identity string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.layerIDLocked(identity)
}

func (c *Cache) layerIDLocked(identity string) uint64 {
	if id, ok := c.ids[identity]; ok {
		return id
	}
	id := c.nextIDs
	c.nextIDs++
	c.ids[identity] = id
	old := *c.layers.Load()
	grown := append(append([]*LayerStats(nil), old...), &LayerStats{Identity: identity})
	c.layers.Store(&grown)
	return id
}

// Layer is one reader's view of a layer identity in the cache, between
// Open and Close: it is the cache a zfile.Reader takes (zfile.Cache).
type Layer struct {
	c      *Cache
	id     uint64
	st     *LayerStats
	closed atomic.Bool
}

// Open registers one reader of a layer identity (see LayerID); the reader
// calls Close on the returned Layer when it is done. The count of open
// readers is what Shared reports. An empty identity gets one of its own,
// shared with no other reader.
func (c *Cache) Open(identity string) *Layer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if identity == "" {
		// NUL-prefixed: no digest or file identity looks like it.
		identity = fmt.Sprintf("\x00anonymous:%d", c.nextIDs)
	}
	id := c.layerIDLocked(identity)
	st := (*c.layers.Load())[id]
	st.opens.Add(1)
	return &Layer{c: c, id: id, st: st}
}

// Close ends the reader's Open. It is idempotent; the Layer stays usable
// (only the count of readers drops).
func (l *Layer) Close() error {
	if l.closed.CompareAndSwap(false, true) {
		l.st.opens.Add(-1)
	}
	return nil
}

// ID is the layer's id (the Layer field of its Keys).
func (l *Layer) ID() uint64 { return l.id }

// Stats returns the layer's counters.
func (l *Layer) Stats() *LayerStats { return l.st }

// Shared reports whether two or more readers have the layer open, so that a
// block one of them decodes may well be read by another. A reader of a layer
// nobody else has open can decode whole blocks straight into its caller's
// buffer: caching them would only cost fresh memory (on a cold daemon, the
// kernel zeroing every page the cache touches, which measured at 14x the
// decoding itself) for blocks the kernel's page cache holds anyway.
func (l *Layer) Shared() bool { return l.st.opens.Load() >= 2 }

// ReadBlock copies bytes [off, off+len(dst)) of decoded block number block
// into dst and returns the count. whole says dst is the entire block: then,
// unless the layer is Shared, a block not already cached is decoded
// straight into dst (fill(dst)) and not kept. Otherwise it is Get: on a
// miss fill decodes into a cache buffer of len size.
func (l *Layer) ReadBlock(block int64, size, off int, dst []byte, whole bool, fill func(buf []byte) (int, error)) (int, error) {
	k := Key{Layer: l.id, Block: block}
	if whole && !l.Shared() {
		if n, hit := l.c.Peek(k, 0, dst); hit {
			return n, nil
		}
		n, err := fill(dst)
		if err == nil {
			l.st.Direct.Add(1)
		}
		return n, err
	}
	return l.c.Get(k, size, off, dst, fill)
}

// Stats returns the counters of a layer id (nil if unknown).
func (c *Cache) Stats(id uint64) *LayerStats {
	l := *c.layers.Load()
	if id >= uint64(len(l)) {
		return nil
	}
	return l[id]
}

// Bytes is the number of decoded bytes held now.
func (c *Cache) Bytes() int64 {
	var n int64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.bytes
		s.mu.Unlock()
	}
	return n
}

func (c *Cache) shardOf(k Key) *shard {
	h := (k.Layer*0x9E3779B97F4A7C15 ^ uint64(k.Block)) * 0xBF58476D1CE4E5B9
	return &c.shards[h>>(64-6)]
}

// Peek copies bytes [off, off+len(dst)) of block k into dst if the block is
// cached, like a Get that hits; it never fills. ok is false on a miss
// (including a block still being filled).
func (c *Cache) Peek(k Key, off int, dst []byte) (n int, ok bool) {
	s := c.shardOf(k)
	s.mu.Lock()
	e := s.m[k]
	if e == nil || e.loading || off < 0 {
		s.mu.Unlock()
		return 0, false
	}
	s.moveToFront(e)
	n = copyFrom(dst, e.buf, off)
	s.mu.Unlock()
	if st := c.Stats(k.Layer); st != nil {
		st.Hits.Add(1)
	}
	return n, true
}

// Get copies bytes [off, off+len(dst)) of decoded block k into dst and returns
// the count (fewer when the block is shorter). On a miss, fill is called once
// for all concurrent callers of k with a buffer of len size to decode into; it
// returns the decoded length. A fill error is returned to every waiter and
// nothing is cached, so the next Get tries again.
func (c *Cache) Get(k Key, size int, off int, dst []byte, fill func(buf []byte) (int, error)) (int, error) {
	if off < 0 || size <= 0 {
		return 0, fmt.Errorf("blockcache: bad request off=%d size=%d", off, size)
	}
	st := c.Stats(k.Layer)
	s := c.shardOf(k)
	for {
		s.mu.Lock()
		e := s.m[k]
		if e == nil {
			break
		}
		if !e.loading {
			s.moveToFront(e)
			n := copyFrom(dst, e.buf, off)
			s.mu.Unlock()
			if st != nil {
				st.Hits.Add(1)
			}
			return n, nil
		}
		done := e.done
		s.mu.Unlock()
		<-done
		// Loop: on success the entry is now loaded (or was evicted, then we
		// fill it ourselves); on error it is gone and we try our own fill.
		if e.err != nil {
			return 0, e.err
		}
	}
	// Miss: register a loading entry so concurrent callers wait for us.
	e := &entry{key: k, done: make(chan struct{}), loading: true}
	s.m[k] = e
	s.mu.Unlock()
	if st != nil {
		st.Misses.Add(1)
	}

	buf := c.arena.get(size)
	n, err := fill(buf[:size])
	if err == nil && (n < 0 || n > size) {
		err = fmt.Errorf("blockcache: fill returned %d bytes for a %d-byte block", n, size)
	}
	s.mu.Lock()
	if err != nil {
		delete(s.m, k)
		e.err = err
		close(e.done)
		s.mu.Unlock()
		c.arena.put(buf)
		if st != nil {
			st.Errors.Add(1)
		}
		return 0, err
	}
	e.buf = buf[:n]
	e.loading = false
	s.pushFront(e)
	s.bytes += int64(cap(e.buf))
	copied := copyFrom(dst, e.buf, off)
	s.evict(c.maxBytes / shardCount)
	close(e.done)
	s.mu.Unlock()
	if st != nil {
		st.Fills.Add(int64(n))
	}
	return copied, nil
}

// Drop removes every block of a layer, e.g. after its backing data was found
// corrupt and re-fetched.
func (c *Cache) Drop(layer uint64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if k.Layer == layer && !e.loading {
				s.remove(e)
			}
		}
		s.mu.Unlock()
	}
}

func copyFrom(dst, block []byte, off int) int {
	if off >= len(block) {
		return 0
	}
	return copy(dst, block[off:])
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (s *shard) moveToFront(e *entry) {
	if s.head == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}

func (s *shard) remove(e *entry) {
	s.unlink(e)
	delete(s.m, e.key)
	s.bytes -= int64(cap(e.buf))
	s.arena.put(e.buf)
	e.buf = nil
}

// evict drops least-recently-used blocks until the shard is within limit,
// always keeping the most recent one.
func (s *shard) evict(limit int64) {
	for s.bytes > limit && s.tail != nil && s.tail != s.head {
		s.remove(s.tail)
	}
}
