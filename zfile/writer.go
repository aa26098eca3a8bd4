package zfile

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// WriterOptions configures NewWriter. Zero values select the defaults of the
// overlaybd tools.
type WriterOptions struct {
	// Algorithm is LZ4 (default) or Zstd.
	Algorithm Algorithm
	// BlockSize is the uncompressed block size: a power of two from 4 KiB
	// to 64 KiB, default 4096. Larger blocks compress better but every
	// random read decodes a whole block, and a stored block over 64 KiB
	// (possible with 64 KiB blocks of incompressible data) is refused.
	BlockSize int
	// Concurrency > 1 compresses that many blocks in parallel. The output
	// is the same bytes as with 1.
	Concurrency int
}

// Writer writes a ZFile as overlaybd's ZFileBuilder does (docs/format-zfile.md §7): header
// (flags 0x13), blocks each followed by its CRC32C, index, trailer (0x16).
// It is not safe for concurrent use.
type Writer struct {
	w       io.Writer
	bs      int
	algo    Algorithm
	conc    int
	hdr     Header
	pend    []byte // input of up to len(outs) blocks
	npend   int
	outs    [][]byte // per-slot stored block (compressed + CRC)
	errs    []error
	lz      []lz4.CompressorCCompat // one per worker
	zenc    *zstd.Encoder
	lengths []uint32
	written int64
	raw     int64
	err     error // sticky
	closed  bool
	trailer Header
}

// NewWriter writes the initial header to w and returns a Writer.
func NewWriter(w io.Writer, o WriterOptions) (*Writer, error) {
	if o.Algorithm == 0 {
		o.Algorithm = LZ4
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	if o.Algorithm != LZ4 && o.Algorithm != Zstd {
		return nil, fmt.Errorf("zfile: writer: %w: algorithm %v", ErrUnsupported, o.Algorithm)
	}
	bs := o.BlockSize
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("zfile: writer: block size %d is not a power of two from %d to %d", bs, MinBlockSize, MaxBlockSize)
	}
	zw := &Writer{w: w, bs: bs, algo: o.Algorithm, conc: o.Concurrency}
	slots := 1
	if zw.conc > 1 {
		slots = 4 * zw.conc
	}
	zw.pend = make([]byte, slots*bs)
	zw.outs = make([][]byte, slots)
	for i := range zw.outs {
		zw.outs[i] = make([]byte, lz4.CompressBlockBound(bs)+64+4)
	}
	zw.errs = make([]error, slots)
	if zw.algo == LZ4 {
		zw.lz = make([]lz4.CompressorCCompat, zw.conc)
	} else {
		// Level 3 like overlaybd's hard-coded ZSTD_compress level; no frame
		// checksum (libzstd's default), the block CRC covers it.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(zw.conc))
		if err != nil {
			return nil, fmt.Errorf("zfile: writer: %w", err)
		}
		zw.zenc = enc
	}
	zw.hdr = Header{
		Magic0: Magic0, Magic1: Magic1, Size: StructSize,
		Flags:     FlagsInitialHeader,
		BlockSize: uint32(bs), Algo: uint8(zw.algo), Verify: 1,
	}
	h := zw.hdr
	if err := zw.write(h.Seal()); err != nil {
		zw.release()
		return nil, err
	}
	return zw, nil
}

func (zw *Writer) write(p []byte) error {
	if zw.err != nil {
		return zw.err
	}
	n, err := zw.w.Write(p)
	zw.written += int64(n)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		zw.err = fmt.Errorf("zfile: writer: %w", err)
	}
	return zw.err
}

// Write compresses p. Blocks are written as they fill.
func (zw *Writer) Write(p []byte) (int, error) {
	if zw.closed {
		return 0, fmt.Errorf("zfile: writer: write after Close")
	}
	done := 0
	for done < len(p) && zw.err == nil {
		n := copy(zw.pend[zw.npend:], p[done:])
		zw.npend += n
		done += n
		if zw.npend == len(zw.pend) {
			zw.flush()
		}
	}
	zw.raw += int64(done)
	return done, zw.err
}

// flush compresses and writes the pending blocks (the last may be short).
func (zw *Writer) flush() {
	if zw.npend == 0 || zw.err != nil {
		return
	}
	nb := (zw.npend + zw.bs - 1) / zw.bs
	base := len(zw.lengths)
	if zw.conc == 1 || nb == 1 {
		for i := range nb {
			zw.compress(i, 0)
		}
	} else {
		var wg sync.WaitGroup
		for wk := range min(zw.conc, nb) {
			wg.Go(func() {
				for i := wk; i < nb; i += zw.conc {
					zw.compress(i, wk)
				}
			})
		}
		wg.Wait()
	}
	for i := range nb {
		if err := zw.errs[i]; err != nil {
			zw.err = fmt.Errorf("zfile: writer: block %d: %w", base+i, err)
			return
		}
		if zw.write(zw.outs[i]) != nil {
			return
		}
		zw.lengths = append(zw.lengths, uint32(len(zw.outs[i])))
	}
	zw.npend = 0
}

// compress stores pending block i into outs[i] using worker wk's compressor.
func (zw *Writer) compress(i, wk int) {
	src := zw.pend[i*zw.bs : min((i+1)*zw.bs, zw.npend)]
	dst := zw.outs[i][:cap(zw.outs[i])]
	var n int
	zw.errs[i] = nil
	switch zw.algo {
	case LZ4:
		var err error
		n, err = zw.lz[wk].CompressBlock(src, dst[:lz4.CompressBlockBound(len(src))])
		if err != nil {
			zw.errs[i] = err
			return
		}
		if n == 0 {
			// (0, nil) means "incompressible, give me a bigger buffer";
			// with a bound-sized buffer it should not happen, but a stored
			// block must be valid LZ4, so emit literals only.
			n = lz4Literals(dst, src)
		}
	case Zstd:
		out := zw.zenc.EncodeAll(src, dst[:0])
		if &out[:1][0] != &dst[0] {
			dst = append(out, 0, 0, 0, 0)[:len(out)]
		}
		n = len(out)
		zw.outs[i] = dst
	}
	if n+4 > MaxStoredBlock {
		zw.errs[i] = fmt.Errorf("%w: %d-byte block compresses to %d bytes + 4-byte CRC, more than the %d overlaybd can read; use a smaller block size",
			ErrBlockTooLarge, len(src), n, MaxStoredBlock)
		return
	}
	binary.LittleEndian.PutUint32(dst[n:], crc32c(BlockCRCSeed, dst[:n]))
	zw.outs[i] = dst[:n+4]
}

// lz4Literals writes src as one LZ4 sequence of literals only (a valid block
// of any length) and returns its size.
func lz4Literals(dst, src []byte) int {
	i := 1
	if l := len(src); l < 15 {
		dst[0] = byte(l << 4)
	} else {
		dst[0] = 0xF0
		for l -= 15; l >= 255; l -= 255 {
			dst[i] = 255
			i++
		}
		dst[i] = byte(l)
		i++
	}
	return i + copy(dst[i:], src)
}

// Close writes the last block, the index and the trailer. It does not close
// the underlying writer.
func (zw *Writer) Close() error {
	if zw.closed {
		return zw.err
	}
	zw.closed = true
	defer zw.release()
	zw.flush()
	if zw.err != nil {
		return zw.err
	}
	idx := make([]byte, 4*len(zw.lengths))
	var stored int64
	for i, l := range zw.lengths {
		binary.LittleEndian.PutUint32(idx[4*i:], l)
		stored += int64(l)
	}
	t := zw.hdr
	t.Flags = FlagsTrailer
	t.IndexOffset = uint64(HeaderSize + stored)
	t.IndexSize = uint64(len(zw.lengths))
	t.OriginalSize = uint64(zw.raw)
	t.IndexCRC = crc32c(0, idx)
	if zw.write(idx) != nil {
		return zw.err
	}
	zw.trailer = t
	zw.write(t.Seal())
	return zw.err
}

func (zw *Writer) release() {
	if zw.zenc != nil {
		zw.zenc.Close()
		zw.zenc = nil
	}
	zw.pend, zw.outs = nil, nil
}

// Size is the number of bytes written to the underlying writer so far (the
// whole ZFile after Close).
func (zw *Writer) Size() int64 { return zw.written }

// FinalHeader returns, after a successful Close, the 512-byte header that
// overlaybd-commit writes over offset 0 of the ZFile: the trailer's fields
// with flags 0x1B (header, data, overwrite, digest) and a fresh digest.
// Readers then take the index fields from the header alone.
func (zw *Writer) FinalHeader() []byte {
	if !zw.closed || zw.err != nil {
		return nil
	}
	return finalHeader(zw.trailer)
}

func finalHeader(t Header) []byte {
	t.Flags = FlagsFinalHeader
	return t.Seal()
}
