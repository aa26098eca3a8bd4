package zfile

// Interop audit: ZFile shapes real files can have (docs/format-zfile.md,
// sections cited per case), built byte by byte.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// zparts splits a verify=1 ZFile made by our Writer into header, stored
// blocks, index and trailer, so a test can rebuild it differently.
type zparts struct {
	hdr, trl Header
	blocks   [][]byte // stored bytes of each block, CRC included
}

func split(t testing.TB, z []byte) zparts {
	t.Helper()
	r, err := NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	p := zparts{hdr: r.info.Header, trl: r.info.Used}
	for i := range int(r.info.IndexSize) {
		p.blocks = append(p.blocks, z[r.blockOff(i):r.blockOff(i+1)])
	}
	return p
}

// build writes header (flags as in p.hdr, index fields from the trailer
// when final), blocks, index and trailer, with fresh digests and CRC.
func (p zparts) build(final bool) []byte {
	var b bytes.Buffer
	b.Write(make([]byte, HeaderSize))
	idx := make([]byte, 4*len(p.blocks))
	for i, s := range p.blocks {
		b.Write(s)
		binary.LittleEndian.PutUint32(idx[4*i:], uint32(len(s)))
	}
	t := p.trl
	t.IndexOffset = uint64(b.Len())
	t.IndexSize = uint64(len(p.blocks))
	t.IndexCRC = crc32c(0, idx)
	b.Write(idx)
	b.Write(t.Seal())
	out := b.Bytes()
	h := p.hdr
	if final {
		h = t
		h.Flags = FlagsFinalHeader
	}
	copy(out, h.Seal())
	return out
}

// The uncompressed content is an LSMT-like stream: a multiple of 512 but not
// of 4096 (docs/format-zfile.md §9), mixed compressibility.
func interopContent() []byte { return mixed(100<<12 + 1536) }

func checkContent(t *testing.T, z []byte, want []byte) *Reader {
	t.Helper()
	r, err := NewReader(bytes.NewReader(z), int64(len(z)), WithName("interop.zfile"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", r.Size(), len(want))
	}
	got := make([]byte, len(want))
	if n, err := r.ReadAt(got, 0); n != len(want) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("content differs at %d", testlayer.FirstDiff(got, want))
	}
	checkRandomReads(t, r, want, 200)
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInteropVariants(t *testing.T) {
	data := interopContent()
	zw, tool, err := compress(t, data, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	final := bytes.Clone(tool)
	copy(final, zw.FinalHeader())
	trlAt := len(tool) - HeaderSize
	mod := func(src []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(src)) }
	_, big, err := compress(t, text(5, 5<<16+4608), WriterOptions{BlockSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		z           []byte
		want        []byte
		usedTrailer bool
	}{
		{"tool form 0x13 + trailer 0x16", tool, data, true},
		{"final header 0x1B", final, data, false},
		// docs/format-zfile.md §8 step 2: with bit 3 the trailer is not read at all.
		{"final header, trailer zeroed", mod(final, func(b []byte) []byte { clear(b[trlAt:]); return b }), data, false},
		{"final header, trailer garbage", mod(final, func(b []byte) []byte {
			for i := trlAt; i < len(b); i++ {
				b[i] = byte(i * 31)
			}
			return b
		}), data, false},
		{"final header, no trailer", final[:trlAt], data, false},
		// docs/format-zfile.md §10: before 2023-09 bytes 28..31 were padding: bit 4 clear, so
		// the digest field is not checked whatever it holds.
		{"header bit 4 clear, garbage digest", mod(tool, func(b []byte) []byte {
			reseal(b, 0, func(h *Header) { h.Flags &^= FlagDigest })
			binary.LittleEndian.PutUint32(b[digestOffset:], 0xA4640B43)
			return b
		}), data, true},
		{"both bit 4 clear, garbage digests and index_crc", mod(tool, func(b []byte) []byte {
			reseal(b, 0, func(h *Header) { h.Flags &^= FlagDigest })
			reseal(b, trlAt, func(h *Header) { h.Flags &^= FlagDigest; h.IndexCRC = 0x12345678 })
			binary.LittleEndian.PutUint32(b[digestOffset:], 0xdeadbeef)
			binary.LittleEndian.PutUint32(b[trlAt+digestOffset:], 0xfeedface)
			return b
		}), data, true},
		// docs/format-zfile.md §8: the trailer digest is never verified.
		{"trailer digest wrong", mod(tool, func(b []byte) []byte { b[trlAt+digestOffset] ^= 0xFF; return b }), data, true},
		// docs/format-zfile.md §3: bit 5 (index compressed) is never honoured.
		{"IDX_COMP bit set", mod(final, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.Flags |= FlagIndexCompressed }); return b }), data, false},
		// docs/format-zfile.md §5: index_size larger than ceil(original/bs): extra stored
		// blocks exist but are never part of the content.
		{"index with extra entries", func() []byte {
			p := split(t, tool)
			extra := []byte{0x10, 'x', 0, 0, 0, 0}
			binary.LittleEndian.PutUint32(extra[2:], crc32c(BlockCRCSeed, extra[:2]))
			p.blocks = append(p.blocks, extra, extra)
			return p.build(true)
		}(), data, false},
		{"index with extra entries, tool form", func() []byte {
			p := split(t, tool)
			extra := []byte{0x10, 'x', 0, 0, 0, 0}
			binary.LittleEndian.PutUint32(extra[2:], crc32c(BlockCRCSeed, extra[:2]))
			p.blocks = append(p.blocks, extra)
			return p.build(false)
		}(), data, true},
		{"verify=0", stripCRC(t, tool), data, true},
		// docs/format-zfile.md §5: block_size 64 KiB gives G = 1 (one base per block); last
		// block short.
		{"64 KiB blocks, last short", big, text(5, 5<<16+4608), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkContent(t, tt.z, tt.want)
			if r.Info().UsedTrailer != tt.usedTrailer {
				t.Fatalf("used trailer %v", r.Info().UsedTrailer)
			}
		})
	}
}

// docs/format-zfile.md §8 caveat: a 64 KiB block stored as LZ4 literals is 65,794 + 4 bytes,
// more than overlaybd's 64 KiB read buffer. overlaybd-zfile --bs 64 writes
// such files; we read them (we never return wrong data either way).
func TestStoredBlockOver64K(t *testing.T) {
	data := splitmix(11, 2<<16+1024)
	var blocks [][]byte
	for off := 0; off < len(data); off += 64 << 10 {
		src := data[off:min(off+64<<10, len(data))]
		dst := make([]byte, len(src)+len(src)/255+16+4)
		n := lz4Literals(dst, src)
		binary.LittleEndian.PutUint32(dst[n:], crc32c(BlockCRCSeed, dst[:n]))
		blocks = append(blocks, dst[:n+4])
	}
	if len(blocks[0]) != 65798 {
		t.Fatalf("stored block %d bytes", len(blocks[0]))
	}
	h := Header{Magic0: Magic0, Magic1: Magic1, Size: StructSize, Flags: FlagsInitialHeader, BlockSize: 64 << 10, Algo: uint8(LZ4), Verify: 1}
	tr := h
	tr.Flags = FlagsTrailer
	tr.OriginalSize = uint64(len(data))
	z := zparts{hdr: h, trl: tr, blocks: blocks}.build(false)
	checkContent(t, z, data)
}

// Bad jump tables never panic and never give data: a stored length beyond
// what any block can be is refused at open; a long garbage block (whose CRC
// matches) at the end of a jump-table group opens but its read fails.
func TestBadBlockLengths(t *testing.T) {
	data := interopContent()
	_, tool, _ := compress(t, data, WriterOptions{})

	p := split(t, tool)
	p.blocks[3] = make([]byte, maxStoredLen+1)
	z := p.build(true)
	if _, err := NewReader(bytes.NewReader(z), int64(len(z)), WithName("huge.zfile")); !errors.Is(err, ErrFormat) {
		t.Fatalf("block of %d bytes: %v", maxStoredLen+1, err)
	} else {
		t.Log(err)
	}

	for _, algo := range []Algorithm{LZ4, Zstd} {
		_, tool, _ := compress(t, data, WriterOptions{Algorithm: algo})
		p := split(t, tool)
		g := splitmix(99, 70000) // block 15 ends a 16-block group: not in any in-group delta
		g = binary.LittleEndian.AppendUint32(g, crc32c(BlockCRCSeed, g))
		p.blocks[15] = g
		z := p.build(true)
		r, err := NewReader(bytes.NewReader(z), int64(len(z)), WithName("long.zfile"))
		if err != nil {
			t.Fatalf("%v: %v", algo, err)
		}
		buf := make([]byte, 3*4096)
		if n, err := r.ReadAt(buf, 14*4096); !errors.Is(err, ErrCorrupt) || n > 4096 {
			t.Fatalf("%v: read over the garbage block: %d, %v", algo, n, err)
		}
		if n, err := r.ReadAt(buf[:4096], 16*4096); err != nil || !bytes.Equal(buf[:n], data[16*4096:17*4096]) {
			t.Fatalf("%v: the next block: %d, %v", algo, n, err)
		}
		if err := r.Verify(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%v: Verify: %v", algo, err)
		}
	}
}
