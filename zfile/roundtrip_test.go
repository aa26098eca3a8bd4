package zfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// splitmix fills n bytes with the fixture generator's "rand SEED N" stream.
func splitmix(seed uint64, n int) []byte {
	b := make([]byte, (n+7)&^7)
	s := seed
	for i := 0; i < len(b); i += 8 {
		s += 0x9E3779B97F4A7C15
		z := s
		z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		binary.LittleEndian.PutUint64(b[i:], z^z>>31)
	}
	return b[:n]
}

// text is the fixtures' "text SEED N" pattern: very compressible.
func text(seed, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "overlaybd fixture seed=%d line=%08d\n", seed, i)
	}
	return b.Bytes()[:n]
}

// mixed alternates 48 KiB of text, 16 KiB of random and runs of zeros: about
// what a filesystem image looks like to the compressor.
func mixed(n int) []byte {
	out := make([]byte, 0, n)
	for i := 0; len(out) < n; i++ {
		switch i % 4 {
		case 0, 1:
			out = append(out, text(i, 24<<10)...)
		case 2:
			out = append(out, splitmix(uint64(i), 16<<10)...)
		case 3:
			out = append(out, make([]byte, 8<<10)...)
		}
	}
	return out[:n]
}

func compress(t testing.TB, data []byte, o WriterOptions) (*Writer, []byte, error) {
	var out bytes.Buffer
	zw, err := NewWriter(&out, o)
	if err != nil {
		t.Fatal(err)
	}
	// Odd-sized writes exercise the block accumulation.
	for p := data; len(p) > 0; {
		n := min(len(p), 10007)
		if _, err := zw.Write(p[:n]); err != nil {
			return zw, nil, err
		}
		p = p[n:]
	}
	if err := zw.Close(); err != nil {
		return zw, nil, err
	}
	return zw, out.Bytes(), nil
}

// stripCRC rewrites a verify=1 ZFile as verify=0 (no CRC after each block),
// which overlaybd also reads.
func stripCRC(t testing.TB, data []byte) []byte {
	z, err := NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	h := z.info.Header
	h.Verify = 0
	out.Write(h.Seal())
	idx := make([]byte, 4*z.nblocks)
	for i := range z.nblocks {
		s, e := z.blockOff(i), z.blockOff(i+1)
		out.Write(data[s : e-4])
		binary.LittleEndian.PutUint32(idx[4*i:], uint32(e-s-4))
	}
	tr := z.info.Used
	tr.Verify = 0
	tr.Flags = FlagsTrailer
	tr.IndexOffset = uint64(out.Len())
	tr.IndexCRC = crc32c(0, idx)
	out.Write(idx)
	out.Write(tr.Seal())
	return out.Bytes()
}

func TestRoundTrip(t *testing.T) {
	datasets := []struct {
		name string
		data []byte
	}{
		{"text", text(7, 300<<10+7)},
		{"random", splitmix(3, 200<<10+513)},
		{"mixed", mixed(256 << 10)},
		{"one byte", []byte{42}},
		{"empty", nil},
	}
	for _, algo := range []Algorithm{LZ4, Zstd} {
		for _, bs := range []int{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10} {
			for _, ds := range datasets {
				name := fmt.Sprintf("%v/%dK/%s", algo, bs>>10, ds.name)
				t.Run(name, func(t *testing.T) {
					zw, zdata, err := compress(t, ds.data, WriterOptions{Algorithm: algo, BlockSize: bs, Concurrency: 2})
					if bs == 64<<10 && ds.name == "random" {
						// Incompressible 64 KiB blocks do not fit overlaybd's
						// 64 KiB read buffer with their CRC: refused.
						if !errors.Is(err, ErrBlockTooLarge) {
							t.Fatalf("err %v, want ErrBlockTooLarge", err)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					withFinal := bytes.Clone(zdata)
					copy(withFinal, zw.FinalHeader())
					variants := []struct {
						name        string
						data        []byte
						usedTrailer bool
						verify      bool
					}{
						{"trailer", zdata, true, true},
						{"final header", withFinal, false, true},
						{"no crc", stripCRC(t, zdata), true, false},
					}
					for _, v := range variants {
						z, err := NewReader(bytes.NewReader(v.data), int64(len(v.data)), WithName(name+"/"+v.name))
						if err != nil {
							t.Fatalf("%s: %v", v.name, err)
						}
						if in := z.Info(); in.UsedTrailer != v.usedTrailer || in.Verify != v.verify || in.Algorithm != algo || in.BlockSize != bs {
							t.Errorf("%s: info %+v", v.name, in)
						}
						if z.Size() != int64(len(ds.data)) || z.NumBlocks() != (len(ds.data)+bs-1)/bs {
							t.Errorf("%s: size %d blocks %d", v.name, z.Size(), z.NumBlocks())
						}
						if err := z.Verify(); err != nil {
							t.Errorf("%s: Verify: %v", v.name, err)
						}
						var got bytes.Buffer
						if err := Decompress(&got, z); err != nil || !bytes.Equal(got.Bytes(), ds.data) {
							t.Fatalf("%s: decompressed content differs (err %v)", v.name, err)
						}
						if len(ds.data) > 0 {
							checkRandomReads(t, z, ds.data, 50)
						}
					}
				})
			}
		}
	}
}

func TestWriterOptions(t *testing.T) {
	for _, o := range []WriterOptions{{BlockSize: 2048}, {BlockSize: 128 << 10}, {BlockSize: 12288}, {Algorithm: 3}} {
		if _, err := NewWriter(io.Discard, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	zw, _ := NewWriter(io.Discard, WriterOptions{})
	zw.Close()
	if _, err := zw.Write([]byte{1}); err == nil {
		t.Error("Write after Close: no error")
	}
}

func TestLZ4Literals(t *testing.T) {
	for _, n := range []int{1, 14, 15, 16, 269, 270, 4096, 65536} {
		src := splitmix(uint64(n), n)
		dst := make([]byte, n+n/255+16)
		l := lz4Literals(dst, src)
		got := make([]byte, n)
		if m, err := lz4.UncompressBlock(dst[:l], got); err != nil || m != n || !bytes.Equal(got, src) {
			t.Errorf("n=%d: decoded %d (%v)", n, m, err)
		}
	}
}

// fixtureZFile is a fresh lz4 4K ZFile of data, tool form (trailer used).
func fixtureZFile(t testing.TB, data []byte, algo Algorithm) []byte {
	_, z, err := compress(t, data, WriterOptions{Algorithm: algo})
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func TestCorruptBlock(t *testing.T) {
	data := mixed(200 << 10)
	for _, algo := range []Algorithm{LZ4, Zstd} {
		for _, cached := range cacheModes {
			t.Run(fmt.Sprintf("%v/cached=%v", algo, cached), func(t *testing.T) {
				zdata := fixtureZFile(t, data, algo)
				z0, _ := NewReader(bytes.NewReader(zdata), int64(len(zdata)))
				const bad = 17
				s := z0.blockOff(bad)
				zdata[s+3] ^= 0x40
				var opts []Option
				opts = append(opts, cached.opts(1<<20, "corrupt")...)
				z, err := NewReader(bytes.NewReader(zdata), int64(len(zdata)), append(opts, WithName("bad.zfile"))...)
				if err != nil {
					t.Fatal(err) // open does not read blocks
				}
				buf := make([]byte, 3*4096)
				for _, off := range []int64{bad * 4096, bad*4096 + 100, (bad - 1) * 4096, (bad-2)*4096 + 5} {
					n, err := z.ReadAt(buf, off)
					var be *BlockError
					if !errors.Is(err, ErrChecksum) || !errors.As(err, &be) || be.Block != bad || be.File != "bad.zfile" || be.Offset != s {
						t.Fatalf("ReadAt(%d): %v, want ErrChecksum in block %d at %d", off, err, bad, s)
					}
					if want := max(0, int(bad*4096-off)); n != want || !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
						t.Errorf("ReadAt(%d) = %d good bytes, want %d", off, n, want)
					}
				}
				// Blocks around it read fine, twice (the cache must not keep the error).
				for range 2 {
					for _, off := range []int64{0, (bad - 1) * 4096, (bad + 1) * 4096, 150 << 10} {
						n, err := z.ReadAt(buf[:4096], off)
						if err != nil || !bytes.Equal(buf[:n], data[off:off+4096]) {
							t.Errorf("ReadAt(%d) near the bad block: %v", off, err)
						}
					}
				}
				var be *BlockError
				if err := z.Verify(); !errors.As(err, &be) || be.Block != bad || !errors.Is(err, ErrChecksum) {
					t.Errorf("Verify: %v", err)
				}
			})
		}
	}
}

// TestCorruptNoCRC: without CRCs, a block that no longer decodes to its exact
// size is still an error.
func TestCorruptNoCRC(t *testing.T) {
	data := text(1, 64<<10)
	zdata := stripCRC(t, fixtureZFile(t, data, LZ4))
	z, _ := NewReader(bytes.NewReader(zdata), int64(len(zdata)))
	// Truncate block 3's literal run by lengthening its first token.
	s, e := z.blockOff(3), z.blockOff(4)
	for i := s; i < e; i++ {
		zdata[i] = 0xFF
	}
	_, err := z.ReadAt(make([]byte, 4096), 3*4096)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err %v, want ErrCorrupt", err)
	}
}

// reseal rewrites the structure at off (header or trailer) after f changed it.
func reseal(b []byte, off int, f func(*Header)) {
	var h Header
	h.UnmarshalBinary(b[off:])
	f(&h)
	copy(b[off:], h.Seal())
}

func TestOpenErrors(t *testing.T) {
	data := mixed(100 << 10)
	tool := fixtureZFile(t, data, LZ4) // header 0x13, trailer used
	zw, _, _ := compress(t, data, WriterOptions{})
	final := bytes.Clone(tool)
	copy(final, zw.FinalHeader())
	end := len(tool) - 512
	mod := func(src []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(src)) }

	// A group of 16 blocks of 4 KiB whose stored lengths add up to 75,000.
	group := func() []byte {
		var b bytes.Buffer
		h := Header{Magic0: Magic0, Magic1: Magic1, Size: StructSize, Flags: FlagsInitialHeader, BlockSize: 4096, Algo: 1, Verify: 1}
		b.Write(h.Seal())
		b.Write(make([]byte, 16*5000))
		idx := make([]byte, 64)
		for i := range 16 {
			binary.LittleEndian.PutUint32(idx[4*i:], 5000)
		}
		b.Write(idx)
		h.Flags, h.IndexOffset, h.IndexSize, h.OriginalSize, h.IndexCRC = FlagsTrailer, 512+80000, 16, 16*4096, crc32c(0, idx)
		b.Write(h.Seal())
		return b.Bytes()
	}()

	tests := []struct {
		name string
		data []byte
		err  error
	}{
		{"empty", nil, ErrFormat},
		{"bad magic", mod(tool, func(b []byte) []byte { b[3] = 'X'; return b }), ErrFormat},
		{"header digest", mod(tool, func(b []byte) []byte { b[400] = 1; return b }), ErrChecksum},
		{"final header digest", mod(final, func(b []byte) []byte { b[45]++; return b }), ErrChecksum},
		{"trailer bit clear in header", mod(tool, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.Flags &^= FlagHeader }); return b }), ErrFormat},
		{"truncated", tool[:len(tool)-100], ErrFormat},
		{"truncated final-header form", final[:len(final)-600], ErrFormat},
		{"trailer not sealed", mod(tool, func(b []byte) []byte { reseal(b, end, func(h *Header) { h.Flags &^= FlagSealed }); return b }), ErrFormat},
		{"index_size too big", mod(tool, func(b []byte) []byte { reseal(b, end, func(h *Header) { h.IndexSize = 1e9 + 1 }); return b }), ErrFormat},
		{"index beyond trailer", mod(tool, func(b []byte) []byte { reseal(b, end, func(h *Header) { h.IndexSize += 200 }); return b }), ErrFormat},
		{"index_offset past EOF", mod(final, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.IndexOffset = 1 << 40 }); return b }), ErrFormat},
		{"index_offset inside header", mod(final, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.IndexOffset = 100 }); return b }), ErrFormat},
		{"too few index entries", mod(final, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.OriginalSize += 4096 }); return b }), ErrFormat},
		{"index CRC", mod(tool, func(b []byte) []byte { reseal(b, end, func(h *Header) { h.IndexCRC++ }); return b }), ErrChecksum},
		{"block size 3000", mod(final, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.BlockSize = 3000 }); return b }), ErrFormat},
		{"block size 128K", mod(final, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.BlockSize = 128 << 10 }); return b }), ErrFormat},
		{"algorithm minilzo", mod(final, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.Algo = 0 }); return b }), ErrUnsupported},
		{"dictionary", mod(final, func(b []byte) []byte { reseal(b, 0, func(h *Header) { h.UseDict = 1 }); return b }), ErrUnsupported},
		{"block length 4 with verify", mod(final, func(b []byte) []byte {
			var h Header
			h.UnmarshalBinary(b)
			binary.LittleEndian.PutUint32(b[h.IndexOffset:], 4)
			return b
		}), ErrFormat},
		{"group over 65534 bytes", group, ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z, err := NewReader(bytes.NewReader(tt.data), int64(len(tt.data)), WithName("t.zfile"))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if z != nil {
				t.Fatal("reader returned with an error")
			}
			var fe *FormatError
			if errors.As(err, &fe) && fe.File != "t.zfile" {
				t.Errorf("error names %q", fe.File)
			}
		})
	}
	// Unknown flag bits and reserved bytes are ignored (2021 base layer).
	junk := mod(final, func(b []byte) []byte {
		reseal(b, 0, func(h *Header) { h.Flags |= 0x7FFEA4640B00; h.Reserved0 = 0xdeadbeef; h.Reserved1 = 7 })
		for i := 96; i < 512; i++ {
			b[i] = byte(i)
		}
		reseal(b, 0, func(h *Header) {}) // digest over the junk
		return b
	})
	if _, err := NewReader(bytes.NewReader(junk), int64(len(junk))); err != nil {
		t.Errorf("junk in reserved fields: %v", err)
	}
}

func TestIs(t *testing.T) {
	z := fixtureZFile(t, []byte("x"), LZ4)
	if !Is(bytes.NewReader(z)) || Is(bytes.NewReader(z[1:])) || Is(bytes.NewReader(nil)) {
		t.Error("Is")
	}
}

func TestReadAtEdges(t *testing.T) {
	data := text(2, 10000)
	zdata := fixtureZFile(t, data, LZ4)
	z, _ := NewReader(bytes.NewReader(zdata), int64(len(zdata)))
	buf := make([]byte, 100)
	if n, err := z.ReadAt(buf, 10000); n != 0 || err != io.EOF {
		t.Errorf("at end: %d %v", n, err)
	}
	if n, err := z.ReadAt(buf, 9950); n != 50 || err != io.EOF || !bytes.Equal(buf[:50], data[9950:]) {
		t.Errorf("across end: %d %v", n, err)
	}
	if n, err := z.ReadAt(buf[:0], 5); n != 0 || err != nil {
		t.Errorf("empty read: %d %v", n, err)
	}
	if _, err := z.ReadAt(buf, -1); err == nil {
		t.Error("negative offset: no error")
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	data := mixed(1 << 20)
	for _, algo := range []Algorithm{LZ4, Zstd} {
		for _, cached := range cacheModes {
			zdata := fixtureZFile(t, data, algo)
			var opts []Option
			opts = append(opts, cached.opts(4<<20, "allocs")...)
			z, _ := NewReader(bytes.NewReader(zdata), int64(len(zdata)), opts...)
			buf := make([]byte, 4096)
			off := int64(0)
			read := func() {
				if _, err := z.ReadAt(buf, off); err != nil {
					t.Fatal(err)
				}
				off = (off + 45056) % (1<<20 - 8192)
			}
			for range 300 {
				read() // warm pools, decoder and cache
			}
			if n := testing.AllocsPerRun(200, read); n != 0 {
				t.Errorf("%v cached=%v: %.1f allocs per 4 KiB ReadAt", algo, cached, n)
			}
			off = 1000 // unaligned: through the block buffer
			for range 300 {
				read() // whole blocks went straight to buf above: fill the cache now
			}
			if n := testing.AllocsPerRun(200, read); n != 0 {
				t.Errorf("%v cached=%v: %.1f allocs per unaligned ReadAt", algo, cached, n)
			}
		}
	}
}
