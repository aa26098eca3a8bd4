package zfile

import (
	"bytes"
	"testing"

	"github.com/obdfs/obdfs/blockcache"
)

// The cache admits whole blocks only for layers another reader has open;
// blocks read in part are cached always; cached blocks are used either way.
func TestCachePolicy(t *testing.T) {
	data := mixed(256 << 10) // 64 blocks of 4 KiB
	zdata := fixtureZFile(t, data, LZ4)
	type read struct{ off, len int64 }
	tests := []struct {
		name       string
		others     int // other readers of the layer
		reads      []read
		wantMisses int64 // fills started
		wantDirect int64 // whole blocks decoded without the cache
		wantHits   int64
	}{
		{"alone, whole blocks", 0, []read{{0, 64 << 10}, {64 << 10, 8192}}, 0, 18, 0},
		{"alone, parts of blocks", 0, []read{{100, 200}, {4096 + 10, 4000}}, 2, 0, 0},
		{"alone, a read with partial ends", 0, []read{{1000, 3 * 4096}}, 2, 2, 0},
		{"alone, part then the whole block", 0, []read{{100, 200}, {0, 4096}}, 1, 0, 1},
		{"shared, whole blocks", 1, []read{{0, 64 << 10}, {0, 8192}}, 16, 0, 2},
		{"shared, parts of blocks", 1, []read{{100, 200}, {300, 200}}, 1, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := blockcache.New(1 << 20)
			for range tc.others {
				c.Open("l")
			}
			z, err := NewReader(bytes.NewReader(zdata), int64(len(zdata)), WithCache(c.Open("l")))
			if err != nil {
				t.Fatal(err)
			}
			defer z.Close()
			for _, r := range tc.reads {
				buf := make([]byte, r.len)
				if n, err := z.ReadAt(buf, r.off); err != nil || !bytes.Equal(buf[:n], data[r.off:r.off+r.len]) {
					t.Fatalf("ReadAt(%d, %d) = %d, %v (or wrong bytes)", r.off, r.len, n, err)
				}
			}
			st := c.Stats(c.LayerID("l"))
			if m, d, h := st.Misses.Load(), st.Direct.Load(), st.Hits.Load(); m != tc.wantMisses || d != tc.wantDirect || h != tc.wantHits {
				t.Errorf("misses %d direct %d hits %d, want %d %d %d", m, d, h, tc.wantMisses, tc.wantDirect, tc.wantHits)
			}
			if want := tc.wantMisses * 4096; c.Bytes() != want {
				t.Errorf("cache holds %d bytes, want %d", c.Bytes(), want)
			}
		})
	}
}

// Close ends the Reader's share: a layer read by two Readers is cached, and
// after one closes (twice: Close is idempotent) the other reads whole blocks
// straight through.
func TestCloseEndsSharing(t *testing.T) {
	data := mixed(64 << 10)
	zdata := fixtureZFile(t, data, Zstd)
	c := blockcache.New(1 << 20)
	open := func() *Reader {
		z, err := NewReader(bytes.NewReader(zdata), int64(len(zdata)), WithCache(c.Open("l")))
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	a, b := open(), open()
	buf := make([]byte, 8192)
	if _, err := a.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b.Close()
	if _, err := a.ReadAt(buf, 8192); err != nil || !bytes.Equal(buf, data[8192:16384]) {
		t.Fatalf("read after Close: %v", err)
	}
	st := c.Stats(c.LayerID("l"))
	if m, d := st.Misses.Load(), st.Direct.Load(); m != 2 || d != 2 {
		t.Errorf("misses %d direct %d, want 2 cached while shared and 2 direct after", m, d)
	}
	// b stays usable after Close (it only left the cache's reader count).
	if n, err := b.ReadAt(buf, 0); err != nil || !bytes.Equal(buf[:n], data[:8192]) {
		t.Fatalf("b after Close: %v", err)
	}
}
