package zfile

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// healingBacking serves a ZFile whose byte at bad is flipped until the
// range holding it is invalidated `heals` times, like a registry blob whose
// cache held a bad copy.
type healingBacking struct {
	mu          sync.Mutex
	good        []byte
	bad         int64
	heals       int // invalidations needed before good bytes are served
	invalidated []int64
}

func (h *healingBacking) ReadAt(p []byte, off int64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := copy(p, h.good[off:])
	if h.bad >= off && h.bad < off+int64(n) && len(h.invalidated) < h.heals {
		p[h.bad-off] ^= 0x40
	}
	if n < len(p) {
		return n, fmt.Errorf("short")
	}
	return n, nil
}

func (h *healingBacking) Invalidate(off, length int64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bad >= off && h.bad < off+length {
		h.invalidated = append(h.invalidated, off)
	}
	return nil
}

func TestSelfHealing(t *testing.T) {
	data := mixed(200 << 10)
	zdata := fixtureZFile(t, data, LZ4)
	z0, _ := NewReader(bytes.NewReader(zdata), int64(len(zdata)))
	const bad = 9
	s := z0.blockOff(bad)
	tests := []struct {
		name      string
		heals     int
		wantErr   bool
		wantInval int
	}{
		{"bad copy refetched once", 1, false, 1},
		{"always bad", 1 << 30, true, 2},
	}
	for _, tc := range tests {
		for _, cached := range cacheModes {
			t.Run(fmt.Sprintf("%s/cached=%v", tc.name, cached), func(t *testing.T) {
				h := &healingBacking{good: zdata, bad: s + 2, heals: tc.heals}
				opts := []Option{WithName("remote.zfile")}
				opts = append(opts, cached.opts(1<<20, "heal")...)
				z, err := NewReader(h, int64(len(zdata)), opts...)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 4*4096)
				off := int64(bad-1) * 4096
				n, err := z.ReadAt(buf, off)
				if tc.wantErr {
					if !errors.Is(err, ErrChecksum) {
						t.Fatalf("err = %v, want ErrChecksum", err)
					}
					if n > 4096 || !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
						t.Fatalf("returned %d bytes, wrong or past the bad block", n)
					}
				} else if err != nil || !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
					t.Fatalf("ReadAt after healing: %d, %v", n, err)
				}
				if len(h.invalidated) != tc.wantInval || h.invalidated[0] != s {
					t.Fatalf("invalidated %v, want %d times at %d", h.invalidated, tc.wantInval, s)
				}
			})
		}
	}
}
