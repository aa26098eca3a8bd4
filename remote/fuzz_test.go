package remote

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
)

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-0/1000", "bytes 10-19/*", "bytes 5-4/10", "bytes -1-3/4", "bytes 0-9223372036854775807/1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, b, total, err := parseContentRange(s)
		if err == nil && (a < 0 || b < a || (total != -1 && total <= b)) {
			t.Fatalf("%q parsed to %d-%d/%d", s, a, b, total)
		}
	})
}

func FuzzParseMap(f *testing.F) {
	good := make([]byte, mapHeaderSize+1+4+4) // one chunk: bitmap byte, its sum, the map's CRC
	copy(good, mapMagic)
	binary.LittleEndian.PutUint32(good[8:], mapVersion)
	binary.LittleEndian.PutUint64(good[16:], 1000)
	binary.LittleEndian.PutUint64(good[24:], 4096)
	good[mapHeaderSize] = 1
	binary.LittleEndian.PutUint32(good[len(good)-4:], crc32.Checksum(good[:len(good)-4], crcTable))
	f.Add(good)
	f.Add([]byte("OBDFSMAP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMap(b)
		if err != nil {
			return
		}
		n := (m.size + m.chunk - 1) / m.chunk
		if int64(len(m.bitmap)) != (n+7)/8 || int64(len(m.sums)) != 4*n {
			t.Fatalf("bitmap %d bytes, sums %d bytes for %d chunks", len(m.bitmap), len(m.sums), n)
		}
		bits := make([]uint64, (n+63)/64)
		copyBits(bits, m.bitmap, n)
	})
}

func FuzzParseTrace(f *testing.F) {
	f.Add([]byte(`{"version":1,"layers":{"sha256:` + strings.Repeat("ab", 32) + `":[[0,262144],[1048576,524288]]}}`))
	f.Add([]byte(`{"version":1,"layers":{}}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"layers":{"sha256:x":[[-1,5]]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ParseTrace(b)
		if err != nil {
			return
		}
		for d, rs := range tr.Layers {
			if _, _, err := splitDigest(d); err != nil {
				t.Fatalf("accepted digest %q", d)
			}
			for _, r := range rs {
				if r[0] < 0 || r[1] <= 0 {
					t.Fatalf("accepted range %v", r)
				}
			}
		}
	})
}
