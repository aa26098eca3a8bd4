package zfile

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// prefixZFile rebuilds the ZFile data with only its first n blocks, with the
// trailer form or the overwritten-header form.
func prefixZFile(t testing.TB, data []byte, n int, final bool) []byte {
	z, err := NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	end := z.blockOff(n)
	var out bytes.Buffer
	out.Write(data[:end])
	idx := data[z.info.IndexOffset : z.info.IndexOffset+int64(4*n)]
	out.Write(idx)
	tr := z.info.Used
	tr.Flags = FlagsTrailer
	tr.IndexOffset, tr.IndexSize, tr.OriginalSize, tr.IndexCRC = uint64(end), uint64(n), uint64(n*z.bs), crc32c(0, idx)
	out.Write(tr.Seal())
	b := out.Bytes()
	if final {
		copy(b, finalHeader(tr))
	} else {
		h := z.info.Header
		h.Flags, h.IndexOffset, h.IndexSize, h.OriginalSize, h.IndexCRC = FlagsInitialHeader, 0, 0, 0, 0
		copy(b, h.Seal())
	}
	return b
}

// FuzzNewReader opens arbitrary bytes as a ZFile. It must never panic, and an
// opened file must read exactly what a whole-file decode gives, or fail with
// a block error.
func FuzzNewReader(f *testing.F) {
	for _, name := range []string{"oracle/b/base.lz4.zfile", "oracle/b/base.lz4.tool.zfile", "oracle/c/base.zstd.zfile", "oracle/c/base.zstd.tool.zfile"} {
		// The fixtures cut down to their first blocks (the same block bytes,
		// a new index and trailer), both header forms: whole fixtures make
		// the fuzzer spend its time minimising 300 KB inputs.
		data := readFixture(f, name)
		for _, final := range []bool{false, true} {
			small := prefixZFile(f, data, 6, final)
			f.Add(small)
			f.Add(small[:len(small)-1])
			f.Add(small[:600])
		}
		f.Add(data[:1024])
	}
	small := mixed(12 << 10)
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
		f.Add(g[:len(g)-HeaderSize]) // 0x1B header, no trailer (docs/format-zfile.md §8)
		old := bytes.Clone(z)        // pre-2023: bit 4 clear, garbage digest (docs/format-zfile.md §10)
		reseal(old, 0, func(h *Header) { h.Flags &^= FlagDigest })
		old[digestOffset] ^= 0x5A
		f.Add(old)
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
