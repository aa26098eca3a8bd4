// Package testlayer is what the tests of the layer formats, the front ends
// and the commands share: deterministic data, byte comparison, the
// overlaybd-made fixtures as disks and writable layers, and one check of
// the io.ReaderAt contract that every reader layer must keep.
//
// Of the project's format packages it imports only tarwrap (whose own
// tests therefore do not use it), so the in-package tests of lsmt, zfile and
// the rest can.
package testlayer

import (
	"bytes"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zstd"

	"github.com/obdfs/obdfs/internal/fixture"
	"github.com/obdfs/obdfs/tarwrap"
)

// Random returns n pseudo-random bytes, the same for the same seed.
func Random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x6f6264))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// FirstDiff returns the first offset where a and b differ, or the length
// of the shorter one when it is a prefix of the other.
func FirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Equal fails the test at the first differing byte of got and want.
func Equal(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := FirstDiff(got, want)
		t.Fatalf("%s: %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}

// ReadAll reads size bytes of r from offset 0 in 1 MiB pieces, each of
// which must be read whole.
func ReadAll(t testing.TB, r io.ReaderAt, size int64) []byte {
	t.Helper()
	out := make([]byte, size)
	for off := int64(0); off < size; off += 1 << 20 {
		n, err := r.ReadAt(out[off:min(off+1<<20, size)], off)
		if n != int(min(1<<20, size-off)) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
	}
	return out
}

// TarWrap returns member in overlaybd's tar form (PAX header with the size,
// ustar header with the given mode, the member, padding and the two end
// blocks): what obdfs push makes of a bare layer file.
func TarWrap(member []byte, mode fs.FileMode) []byte {
	out := append(tarwrap.Header(int64(len(member)), mode), member...)
	return append(out, tarwrap.Trailer(int64(len(member)))...)
}

// ExpectedDisk returns the raw disk an oracle fixture describes
// (testdata/oracle/expected-*.raw.zst, decompressed).
func ExpectedDisk(t testing.TB, name string) []byte {
	t.Helper()
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := d.DecodeAll(fixture.Read(t, filepath.Join("oracle", name)), nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}

// CopyRW copies the writable layer overlaybd made (testdata/oracle/e,
// l3.data and l3.index) into dir, so a test may write to it, and returns
// the two paths.
func CopyRW(t testing.TB, dir string) (data, index string) {
	t.Helper()
	var out [2]string
	for i, n := range []string{"l3.data", "l3.index"} {
		out[i] = filepath.Join(dir, n)
		if err := os.WriteFile(out[i], fixture.Read(t, filepath.Join("oracle", "e", n)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out[0], out[1]
}

// TestReaderAt checks r's bytes from offset from to its end (want holds r's
// whole content) with testing/iotest.TestReader: reads of every size to the
// end, and ReadAt at offsets across the range, including reads that run
// past the end, which must be short with io.EOF. r's own ReadAt is called,
// not a clamped section of it. iotest reads byte by byte too, so from keeps
// the range small on large disks; the range always ends at r's end.
func TestReaderAt(t testing.TB, r io.ReaderAt, want []byte, from int64) {
	t.Helper()
	n := int64(len(want)) - from
	s := &readerAt{SectionReader: io.NewSectionReader(r, from, n), r: r, base: from}
	if err := iotest.TestReader(s, want[from:]); err != nil {
		t.Fatalf("from %d: %v", from, err)
	}
}

// readerAt reads and seeks like a section of r but passes ReadAt to r
// itself, so the io.ReaderAt contract checked is r's.
type readerAt struct {
	*io.SectionReader
	r    io.ReaderAt
	base int64
}

func (s *readerAt) ReadAt(p []byte, off int64) (int, error) { return s.r.ReadAt(p, s.base+off) }
