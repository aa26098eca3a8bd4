package blockcache

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func fillPattern(k Key, n int) func([]byte) (int, error) {
	return func(buf []byte) (int, error) {
		for i := range n {
			buf[i] = byte(int64(i) + k.Block + int64(k.Layer)*7)
		}
		return n, nil
	}
}

func TestGetCopiesRanges(t *testing.T) {
	c := New(1 << 20)
	id := c.LayerID("sha256:aa")
	tests := []struct {
		name      string
		block     int64
		decoded   int
		off, want int
		dstLen    int
	}{
		{"whole", 1, 4096, 0, 4096, 4096},
		{"middle", 1, 4096, 100, 50, 50},
		{"tail clipped", 2, 1000, 900, 100, 512},
		{"past end", 2, 1000, 1000, 0, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := Key{id, tc.block}
			dst := make([]byte, tc.dstLen)
			n, err := c.Get(k, 4096, tc.off, dst, fillPattern(k, tc.decoded))
			if err != nil || n != tc.want {
				t.Fatalf("Get = %d, %v; want %d", n, err, tc.want)
			}
			ref := make([]byte, tc.decoded)
			fillPattern(k, tc.decoded)(ref)
			if tc.want > 0 && !bytes.Equal(dst[:n], ref[tc.off:tc.off+n]) {
				t.Fatalf("wrong bytes")
			}
		})
	}
}

func TestConcurrentMissesFillOnce(t *testing.T) {
	c := New(1 << 20)
	id := c.LayerID("l")
	var fills atomic.Int32
	release := make(chan struct{})
	k := Key{id, 5}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]byte, 512)
			n, err := c.Get(k, 512, 0, dst, func(b []byte) (int, error) {
				fills.Add(1)
				<-release
				return fillPattern(k, 512)(b)
			})
			if err != nil || n != 512 {
				t.Errorf("Get = %d, %v", n, err)
			}
		}()
	}
	close(release)
	wg.Wait()
	if f := fills.Load(); f != 1 {
		t.Fatalf("fill ran %d times, want 1", f)
	}
	st := c.Stats(id)
	if st.Misses.Load() != 1 || st.Hits.Load() != 15 {
		t.Fatalf("stats hits=%d misses=%d", st.Hits.Load(), st.Misses.Load())
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	c := New(1 << 20)
	k := Key{c.LayerID("l"), 0}
	bad := errors.New("crc mismatch")
	dst := make([]byte, 16)
	if _, err := c.Get(k, 512, 0, dst, func([]byte) (int, error) { return 0, bad }); !errors.Is(err, bad) {
		t.Fatalf("err = %v", err)
	}
	n, err := c.Get(k, 512, 0, dst, fillPattern(k, 512))
	if err != nil || n != 16 {
		t.Fatalf("retry after error: %d %v", n, err)
	}
	if _, err := c.Get(k, 512, 0, dst, func([]byte) (int, error) { return 513, nil }); err != nil {
		t.Fatalf("cached block refilled: %v", err)
	}
}

func TestBadFillLength(t *testing.T) {
	c := New(1 << 20)
	k := Key{c.LayerID("l"), 0}
	if _, err := c.Get(k, 512, 0, make([]byte, 1), func([]byte) (int, error) { return 513, nil }); err == nil {
		t.Fatal("fill longer than the block was accepted")
	}
}

func TestBoundedAndEvicts(t *testing.T) {
	const max = 64 * 4096 * 4 // four blocks per shard
	c := New(max)
	id := c.LayerID("l")
	dst := make([]byte, 1)
	for b := range int64(5000) {
		k := Key{id, b}
		if _, err := c.Get(k, 4096, 0, dst, fillPattern(k, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Bytes(); got > max {
		t.Fatalf("cache holds %d bytes, bound %d", got, max)
	}
	if c.Bytes() == 0 {
		t.Fatal("cache holds nothing")
	}
	c.Drop(id)
	if got := c.Bytes(); got != 0 {
		t.Fatalf("after Drop: %d bytes", got)
	}
}

func TestLayerIDsStable(t *testing.T) {
	c := New(1)
	a, b := c.LayerID("a"), c.LayerID("b")
	if a == b || c.LayerID("a") != a || c.Stats(b).Identity != "b" || c.Stats(99) != nil {
		t.Fatal("layer ids not stable/distinct")
	}
}

func TestHitAllocatesNothing(t *testing.T) {
	c := New(1 << 20)
	k := Key{c.LayerID("l"), 1}
	dst := make([]byte, 4096)
	fill := fillPattern(k, 4096)
	c.Get(k, 4096, 0, dst, fill)
	if a := testing.AllocsPerRun(100, func() { c.Get(k, 4096, 0, dst, fill) }); a != 0 {
		t.Fatalf("hit allocates %v times", a)
	}
}

func BenchmarkHit(b *testing.B) {
	c := New(1 << 30)
	id := c.LayerID("l")
	for i := range int64(1024) {
		k := Key{id, i}
		c.Get(k, 4096, 0, make([]byte, 1), fillPattern(k, 4096))
	}
	b.SetBytes(4096)
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 4096)
		i := int64(0)
		for pb.Next() {
			k := Key{id, i & 1023}
			c.Get(k, 4096, 0, dst, nil)
			i++
		}
	})
}

func TestArenaReusesEvictedBuffers(t *testing.T) {
	c := New(64 * 4096) // one block per shard
	id := c.LayerID("l")
	dst := make([]byte, 1)
	for b := range int64(20000) {
		k := Key{id, b}
		if _, err := c.Get(k, 4096, 0, dst, fillPattern(k, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	// Live blocks stay within the bound, so evicted buffers are reused and
	// the slabs stop growing: 20000 fills must not map 20000 buffers.
	if n := len(*c.arena.slabs); n*slabSize > 8*64*4096+slabSize {
		t.Fatalf("%d slabs mapped for a %d-byte cache", n, c.MaxBytes())
	}
	big := c.arena.get(1 << 20) // over 64 KiB: from the Go heap
	if len(big) != 1<<20 {
		t.Fatal("large buffer")
	}
	c.arena.put(big) // ignored, not kept
	if len(c.arena.free[maxSlabClass]) != 0 {
		t.Fatal("large buffer put on a free list")
	}
}

// BenchmarkColdFill decodes 64 MiB of 4 KiB blocks into a fresh cache: the
// cost of a cold sequential scan apart from decompression.
func BenchmarkColdFill(b *testing.B) {
	dst := make([]byte, 4096)
	b.SetBytes(64 << 20)
	for b.Loop() {
		c := New(1 << 30)
		id := c.LayerID("l")
		for blk := range int64(16384) {
			c.Get(Key{id, blk}, 4096, 0, dst, func(buf []byte) (int, error) {
				buf[0], buf[4095] = 1, 2 // touch it like a decoder would
				return 4096, nil
			})
		}
	}
}

func TestOpenCloseShared(t *testing.T) {
	c := New(1 << 20)
	l := c.Open("l")
	if l.Shared() {
		t.Error("one reader: Shared")
	}
	l2 := c.Open("l")
	if l2.ID() != l.ID() {
		t.Fatalf("second Open of the same identity: id %d, want %d", l2.ID(), l.ID())
	}
	if !l.Shared() || !l2.Shared() {
		t.Error("two readers: not Shared")
	}
	if other := c.Open("m"); other.Shared() {
		t.Error("another identity's reader made a new layer Shared")
	}
	if a, b := c.Open(""), c.Open(""); a.ID() == b.ID() || a.Shared() {
		t.Error("two readers without identity share a layer")
	}
	l2.Close()
	l2.Close() // idempotent: must not end l's share
	if l.Shared() {
		t.Error("after one Close: still Shared")
	}
	if l.Stats().opens.Load() != 1 {
		t.Errorf("opens %d after a double Close, want 1", l.Stats().opens.Load())
	}
}

func TestPeek(t *testing.T) {
	c := New(1 << 20)
	id := c.LayerID("l")
	k := Key{id, 3}
	dst := make([]byte, 100)
	if _, ok := c.Peek(k, 0, dst); ok {
		t.Fatal("Peek hit an empty cache")
	}
	if c.Bytes() != 0 || c.Stats(id).Misses.Load() != 0 {
		t.Fatal("Peek filled or counted a miss")
	}
	if _, err := c.Get(k, 4096, 0, dst[:1], fillPattern(k, 4096)); err != nil {
		t.Fatal(err)
	}
	n, ok := c.Peek(k, 50, dst)
	ref := make([]byte, 4096)
	fillPattern(k, 4096)(ref)
	if !ok || n != 100 || !bytes.Equal(dst, ref[50:150]) {
		t.Fatalf("Peek after a fill = %d, %v (or wrong bytes)", n, ok)
	}
	if h := c.Stats(id).Hits.Load(); h != 1 {
		t.Errorf("hits = %d, want 1", h)
	}
}
