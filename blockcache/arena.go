package blockcache

import (
	"math/bits"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// arena hands out the cache's block buffers. Blocks of up to 64 KiB (every
// ZFile block size) are carved from 2 MiB anonymous mappings advised for
// transparent huge pages: a cold sequential read decodes every block into a
// fresh buffer, and with Go-heap buffers each 4 KiB one cost a page fault —
// a fifth of the daemon's CPU in a profile of a cold scan. With huge pages
// (or, failing that, MADV_POPULATE_WRITE) a 2 MiB slab costs about one.
//
// Evicted buffers go on a free list per size class and are reused; the
// cache's bound caps the live bytes, so the slabs stay bounded too. The
// mappings are released when the Cache becomes unreachable (no buffer
// escapes the cache: Get copies out under the shard lock).
type arena struct {
	mu    sync.Mutex
	free  [maxSlabClass + 1][][]byte
	cur   []byte
	slabs *[][]byte // separate allocation so the cleanup does not keep the arena alive
}

const (
	minClass     = 9  // 512 B
	maxSlabClass = 16 // 64 KiB
	slabSize     = 2 << 20
)

func newArena() *arena {
	a := &arena{slabs: new([][]byte)}
	runtime.AddCleanup(a, func(slabs *[][]byte) {
		for _, m := range *slabs {
			unix.Munmap(m)
		}
	}, a.slabs)
	return a
}

// class is the power-of-two size class of a buffer of size bytes.
func class(size int) int {
	if size <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(size - 1))
}

func (a *arena) get(size int) []byte {
	cl := class(size)
	if cl > maxSlabClass {
		return make([]byte, size)
	}
	n := 1 << cl
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.free[cl]; len(l) > 0 {
		b := l[len(l)-1]
		a.free[cl] = l[:len(l)-1]
		return b[:size]
	}
	if len(a.cur) < n {
		m, err := unix.Mmap(-1, 0, slabSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return make([]byte, size, n) // no mapping: the Go heap still works
		}
		adviseSlab(m)
		*a.slabs = append(*a.slabs, m)
		a.cur = m
	}
	b := a.cur[:n:n]
	a.cur = a.cur[n:]
	return b[:size]
}

func (a *arena) put(b []byte) {
	c := cap(b)
	if c == 0 || c&(c-1) != 0 {
		return
	}
	cl := bits.Len(uint(c)) - 1
	if cl < minClass || cl > maxSlabClass {
		return
	}
	a.mu.Lock()
	a.free[cl] = append(a.free[cl], b[:c])
	a.mu.Unlock()
}
