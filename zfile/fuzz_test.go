package zfile

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzNewReader opens arbitrary bytes as a ZFile. It must never panic, and an
// opened file must read exactly what a whole-file decode gives, or fail with
// a block error.
func FuzzNewReader(f *testing.F) {
	for _, name := range []string{"oracle/b/base.lz4.zfile", "oracle/b/base.lz4.tool.zfile", "oracle/c/base.zstd.zfile", "oracle/c/base.zstd.tool.zfile"} {
		data := readFixture(f, name)
		f.Add(data)
		f.Add(data[:len(data)-1])
		f.Add(data[:1024])
	}
	small := mixed(20 << 10)
	for _, algo := range []Algorithm{LZ4, Zstd} {
		zw, z, err := compress(f, small, WriterOptions{Algorithm: algo})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(z)
		g := bytes.Clone(z)
		copy(g, zw.FinalHeader())
		f.Add(g)
		f.Add(stripCRC(f, z))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		z, err := NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("open error of unknown class: %v", err)
			}
			return
		}
		if z.Size() > 64<<20 {
			return // a claimed size we will not decode whole
		}
		whole := make([]byte, z.Size())
		n, werr := z.ReadAt(whole, 0)
		verr := z.Verify()
		if (werr == nil || werr == io.EOF) != (verr == nil) && n == len(whole) {
			t.Fatalf("ReadAt error %v but Verify %v", werr, verr)
		}
		// Reads in pieces agree with the whole read where it succeeded.
		buf := make([]byte, 5000)
		for off := int64(0); off < int64(n); off += 3001 {
			m, err := z.ReadAt(buf, off)
			if err != nil && err != io.EOF {
				var be *BlockError
				if !errors.As(err, &be) {
					t.Fatalf("ReadAt(%d): not a BlockError: %v", off, err)
				}
			}
			if end := min(int64(n), off+int64(m)); end > off && !bytes.Equal(buf[:end-off], whole[off:end]) {
				t.Fatalf("ReadAt(%d) differs from the whole read", off)
			}
		}
	})
}
