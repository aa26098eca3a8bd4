package zfile

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/iotest"
)

func TestFixtures(t *testing.T) {
	want := readFixture(t, "oracle/a/base.lsmt")
	tests := []struct {
		file        string
		algo        Algorithm
		headerFlags uint64
		usedTrailer bool
	}{
		{"oracle/b/base.lz4.zfile", LZ4, 0x1b, false},
		{"oracle/b/base.lz4.tool.zfile", LZ4, 0x13, true},
		{"oracle/c/base.zstd.zfile", Zstd, 0x1b, false},
		{"oracle/c/base.zstd.tool.zfile", Zstd, 0x13, true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data := readFixture(t, tt.file)
			for _, cached := range cacheModes {
				var opts []Option
				opts = append(opts, cached.opts(1<<20, tt.file)...)
				z, err := NewReader(bytes.NewReader(data), int64(len(data)), append(opts, WithName(tt.file))...)
				if err != nil {
					t.Fatal(err)
				}
				info := z.Info()
				if info.Algorithm != tt.algo || info.Header.Flags != tt.headerFlags || info.UsedTrailer != tt.usedTrailer {
					t.Errorf("info: algo %v header flags %#x trailer %v", info.Algorithm, info.Header.Flags, info.UsedTrailer)
				}
				if !info.HeaderDigestOK || !info.IndexCRCChecked || !info.Verify {
					t.Errorf("info: digest %v index crc %v verify %v, want all true", info.HeaderDigestOK, info.IndexCRCChecked, info.Verify)
				}
				if z.Size() != int64(len(want)) || z.BlockSize() != 4096 || z.NumBlocks() != 211 {
					t.Errorf("size %d bs %d blocks %d", z.Size(), z.BlockSize(), z.NumBlocks())
				}
				var got bytes.Buffer
				if err := Decompress(&got, z); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), want) {
					t.Fatalf("cached=%v: content differs from a/base.lsmt", cached)
				}
				if err := z.Verify(); err != nil {
					t.Fatal(err)
				}
				checkRandomReads(t, z, want, 100)
			}
		})
	}
}

// checkRandomReads compares reads at random offsets and lengths (crossing
// block boundaries and the end) with want.
func checkRandomReads(t *testing.T, z io.ReaderAt, want []byte, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, uint64(len(want))))
	size := int64(len(want))
	buf := make([]byte, 160<<10)
	for range n {
		off := rng.Int64N(size + 10)
		l := rng.IntN(len(buf))
		switch rng.IntN(4) {
		case 0:
			l = rng.IntN(100)
		case 1:
			l = 4096
		}
		got, err := z.ReadAt(buf[:l], off)
		wantN := int(max(0, min(int64(l), size-off)))
		if got != wantN {
			t.Fatalf("ReadAt(%d, %d) = %d, want %d (err %v)", l, off, got, wantN, err)
		}
		if wantN < l && err != io.EOF {
			t.Fatalf("ReadAt(%d, %d) short read with err %v, want io.EOF", l, off, err)
		}
		if wantN == l && err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", l, off, err)
		}
		if wantN > 0 && !bytes.Equal(buf[:got], want[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d, %d): wrong bytes", l, off)
		}
	}
}

// TestBaseLayer opens overlaybd's 2021 base layer, whose reserved bytes, upper
// flag bits and index_crc hold garbage (docs/format-zfile.md §10), and checks its whole content.
func TestBaseLayer(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses 541 MB; skipped with -short")
	}
	gz := readFixture(t, "real/ext4_64.tar.gz")
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil || h.Name != "ext4_64" {
		t.Fatalf("tar member %v: %v", h, err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	z, err := NewReader(bytes.NewReader(data), int64(len(data)), WithName("ext4_64"))
	if err != nil {
		t.Fatal(err)
	}
	info := z.Info()
	if info.Header.Flags != 0x00007FFEA4640B43 || info.Used.Flags != 0x00007FFEA4640B46 || !info.UsedTrailer || info.HeaderDigestOK || info.IndexCRCChecked {
		t.Errorf("info %+v", info)
	}
	if z.Size() != 541937664 || z.NumBlocks() != 132309 {
		t.Errorf("size %d blocks %d", z.Size(), z.NumBlocks())
	}
	hash := sha256.New()
	if err := Decompress(hash, z); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != "799dbd74cbcfbd7f37611057130b20fda0e1e671280df97cc3a05d73620d5ac7" {
		t.Errorf("content sha256 %s", got)
	}
}

// TestIOTest runs the io conformance suite (Read/ReadAt/Seek/EOF through a
// SectionReader) over a small file of each algorithm, cached and not; it
// does many 1-byte reads, hence the small file.
func TestIOTest(t *testing.T) {
	want := readFixture(t, "oracle/a/base.lsmt")[:40000]
	for _, algo := range []Algorithm{LZ4, Zstd} {
		zdata := fixtureZFile(t, want, algo)
		for _, cached := range cacheModes {
			var opts []Option
			opts = append(opts, cached.opts(1<<20, "iotest")...)
			z, err := NewReader(bytes.NewReader(zdata), int64(len(zdata)), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := iotest.TestReader(io.NewSectionReader(z, 0, z.Size()), want); err != nil {
				t.Errorf("%v cached=%v: %v", algo, cached, err)
			}
		}
	}
}

func TestConcurrentReads(t *testing.T) {
	want := readFixture(t, "oracle/a/base.lsmt")
	for _, f := range []string{"oracle/b/base.lz4.zfile", "oracle/c/base.zstd.zfile"} {
		data := readFixture(t, f)
		for _, cached := range cacheModes {
			opts := []Option{WithName(f)}
			// Small cache: evictions and refills race with hits.
			opts = append(opts, cached.opts(64<<10, f)...)
			z, err := NewReader(bytes.NewReader(data), int64(len(data)), opts...)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 7))
					buf := make([]byte, 64<<10)
					for range 200 {
						off := rng.Int64N(z.Size())
						l := rng.IntN(len(buf))
						n, err := z.ReadAt(buf[:l], off)
						if err != nil && err != io.EOF {
							t.Error(err)
							return
						}
						if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
							t.Errorf("%s cached=%v: wrong bytes at %d+%d", f, cached, off, n)
							return
						}
					}
				})
			}
			wg.Wait()
		}
	}
}
