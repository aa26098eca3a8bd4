package zfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// maxStoredLen bounds one stored block (payload + CRC) when reading. overlaybd
// itself fails on blocks over MaxStoredBlock (docs/format-zfile.md §8); we read blocks up to the
// worst case of a 64 KiB block (LZ4 bound 65,809 + CRC) so that files made by
// "overlaybd-zfile --bs 64" on incompressible data still open here.
const maxStoredLen = 128 << 10

// batchSize is the size of the pooled buffers that hold the compressed bytes
// of a run of consecutive blocks fetched with one backing ReadAt. It must be
// at least maxStoredLen. overlaybd uses 64 KiB; 64 KiB to 1 MiB measured
// within noise of each other (docs/PERFORMANCE.md), and 128 KiB is the
// smallest that holds any block we accept.
const batchSize = 128 << 10

// indexChunk is how many index bytes are read at a time on open, so a huge
// index never needs one huge buffer (overlaybd reads it in 1 MiB chunks too).
const indexChunk = 1 << 20

var (
	batchPool = sync.Pool{New: func() any { b := make([]byte, batchSize); return &b }}
	blockPool = sync.Pool{New: func() any { b := make([]byte, MaxBlockSize); return &b }}
)

// zstdDecoder is shared by every Reader: DecodeAll is safe for concurrent use
// and allocation-free after warm-up, and its decoder pool (one per CPU) bounds
// memory.
var zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(8<<20))
	if err != nil {
		panic(err) // only for invalid options
	}
	return d
})

// Option configures NewReader.
type Option func(*options)

type options struct {
	name  string
	cache Cache
}

// WithName sets the name used in every error (usually the file path).
func WithName(name string) Option { return func(o *options) { o.name = name } }

// Cache keeps decoded blocks for Readers; blockcache.Layer implements it.
// ReadBlock copies bytes [off, off+len(dst)) of decoded block number block
// into dst and returns the count. whole says dst is the entire block, which
// the cache may decode straight into (fill(dst)) rather than keep. On a
// miss fill decodes the block into a buffer (of len size unless it is dst)
// and returns its length; fill errors are returned, never kept.
type Cache interface {
	ReadBlock(block int64, size, off int, dst []byte, whole bool, fill func(buf []byte) (int, error)) (int, error)
}

// WithCache serves decoded blocks through c, which the Reader then owns:
// Reader.Close closes it when it is an io.Closer (a blockcache.Layer, which
// counts the Reader as one reader of its layer until then). Readers whose
// caches share blocks (Layers of one identity) must be over the same content.
func WithCache(c Cache) Option {
	return func(o *options) { o.cache = c }
}

// Info describes an open ZFile, for `obdfs info`.
type Info struct {
	FileSize int64  // size of the ZFile bytes
	Header   Header // the structure at offset 0
	Used     Header // the structure the index fields came from
	// UsedTrailer is true when Used is the trailer at EOF−512, false when
	// it is the overwritten header (flag 0x08).
	UsedTrailer bool
	// HeaderDigestOK reports that the header had FlagDigest and its digest
	// matched; IndexCRCChecked that the index CRC was present and matched.
	HeaderDigestOK  bool
	IndexCRCChecked bool

	Algorithm       Algorithm
	BlockSize       int
	Verify          bool
	NumBlocks       int
	IndexOffset     int64
	IndexSize       int64
	OriginalSize    int64
	CompressedBytes int64 // sum of the stored block lengths (CRCs included)
}

// Structure names the structure used: "overwritten header" or "trailer".
func (i Info) Structure() string {
	if i.UsedTrailer {
		return "trailer"
	}
	return "overwritten header"
}

// Reader is an io.ReaderAt over the decompressed content of a ZFile. It is
// safe for concurrent use.
type Reader struct {
	r       io.ReaderAt
	name    string
	info    Info
	algo    Algorithm
	verify  bool
	bs      int
	shift   uint // log2(bs)
	orig    int64
	nblocks int
	gshift  uint     // log2(blocks per jump-table group)
	bases   []int64  // absolute offset of the first block of each group
	deltas  []uint16 // offset of each block (and of the end) from its group base
	cache   Cache
	fillers sync.Pool   // *filler, for the cached path
	inv     Invalidator // non-nil when the backing data can be refetched
	closed  atomic.Bool
}

// Invalidator is implemented by backing data that can drop a range and
// fetch it again on the next read (a registry blob's persistent cache).
// A Reader whose backing data implements it invalidates a block that fails
// its CRC and reads it once more before reporting the error.
type Invalidator interface {
	Invalidate(off, length int64) error
}

// Is reports whether r starts with the ZFile magic.
func Is(r io.ReaderAt) bool {
	var b [24]byte
	n, _ := r.ReadAt(b[:], 0)
	return n == len(b) && hasMagic(b[:])
}

// NewReader opens the ZFile of size bytes in r, following overlaybd's
// zfile_open_ro (docs/format-zfile.md §8). Unknown flag bits and reserved bytes are ignored.
func NewReader(r io.ReaderAt, size int64, opts ...Option) (*Reader, error) {
	o := options{name: "(unnamed)"}
	for _, f := range opts {
		f(&o)
	}
	z := &Reader{r: r, name: o.name}
	z.inv, _ = r.(Invalidator)
	ferr := func(off int64, field string, err error, format string, args ...any) error {
		return &FormatError{File: o.name, Offset: off, Field: field, Msg: fmt.Sprintf(format, args...), Err: err}
	}
	if size < HeaderSize {
		return nil, ferr(0, "file size", ErrFormat, "%d bytes is too short for a ZFile header", size)
	}
	var hb [HeaderSize]byte
	if err := z.readFull(hb[:], 0); err != nil {
		return nil, fmt.Errorf("zfile %s: reading header: %w", o.name, err)
	}
	if !hasMagic(hb[:]) {
		return nil, ferr(0, "header magic", ErrFormat, "not a ZFile")
	}
	var h Header
	_ = h.UnmarshalBinary(hb[:])
	if !h.IsHeader() {
		return nil, ferr(32, "header flags", ErrFormat, "flags %#x: bit 0 (header) is clear at offset 0", h.Flags)
	}
	z.info.FileSize = size
	z.info.Header = h
	if h.Flags&FlagDigest != 0 {
		if d := headerDigest(hb[:]); d != h.Digest {
			return nil, ferr(digestOffset, "header digest", ErrChecksum, "stored %#08x, computed %#08x", h.Digest, d)
		}
		z.info.HeaderDigestOK = true
	}

	used, usedAt, limit := h, int64(0), size
	if h.Flags&FlagHeaderOverwrite == 0 {
		// The header has no final index fields: use the trailer.
		if h.Flags&FlagDataFile == 0 {
			return nil, ferr(32, "header flags", ErrFormat, "flags %#x: not a data file (bit 1 clear)", h.Flags)
		}
		if size < 2*HeaderSize {
			return nil, ferr(0, "file size", ErrFormat, "%d bytes is too short for header and trailer", size)
		}
		usedAt, limit = size-HeaderSize, size-HeaderSize
		if err := z.readFull(hb[:], usedAt); err != nil {
			return nil, fmt.Errorf("zfile %s: reading trailer: %w", o.name, err)
		}
		if !hasMagic(hb[:]) {
			return nil, ferr(usedAt, "trailer magic", ErrFormat, "no ZFile magic at EOF-512 (truncated file?)")
		}
		_ = used.UnmarshalBinary(hb[:])
		if want := FlagDataFile | FlagSealed; used.Flags&FlagHeader != 0 || used.Flags&want != want {
			return nil, ferr(usedAt+32, "trailer flags", ErrFormat, "flags %#x: want header bit clear, data and sealed bits set", used.Flags)
		}
		z.info.UsedTrailer = true
		// overlaybd does not verify the trailer digest (docs/format-zfile.md §8); neither do we.
	}
	z.info.Used = used

	// Sizes and options, before allocating anything.
	switch Algorithm(used.Algo) {
	case LZ4, Zstd:
	default:
		return nil, ferr(usedAt+76, "algorithm", ErrUnsupported, "%v is not implemented (want 1 lz4 or 2 zstd)", Algorithm(used.Algo))
	}
	if used.UseDict != 0 || used.DictSize != 0 {
		return nil, ferr(usedAt+78, "dictionary", ErrUnsupported, "use_dict=%d dict_size=%d: dictionaries are not supported", used.UseDict, used.DictSize)
	}
	bs := used.BlockSize
	if bs == 0 || bs&(bs-1) != 0 || bs > MaxBlockSize {
		return nil, ferr(usedAt+72, "block size", ErrFormat, "%d is not a power of two <= %d", bs, MaxBlockSize)
	}
	if used.IndexSize > MaxIndexSize {
		return nil, ferr(usedAt+48, "index size", ErrFormat, "%d entries exceeds the limit of %d", used.IndexSize, MaxIndexSize)
	}
	dataStart := int64(HeaderSize) // + dict_size, always 0
	if used.IndexOffset < uint64(dataStart) || used.IndexOffset > uint64(limit) || used.IndexSize*4 > uint64(limit)-used.IndexOffset {
		where := fmt.Sprintf("the %d bytes before the trailer", limit)
		if !z.info.UsedTrailer {
			where = fmt.Sprintf("the %d-byte file", limit) // overwritten header: no trailer involved
		}
		return nil, ferr(usedAt+40, "index", ErrFormat, "offset %d + %d entries x 4 bytes does not fit in %s", used.IndexOffset, used.IndexSize, where)
	}
	if used.OriginalSize > 1<<62 {
		return nil, ferr(usedAt+56, "original size", ErrFormat, "%d is too large", used.OriginalSize)
	}
	needed := (used.OriginalSize + uint64(bs) - 1) / uint64(bs)
	if needed > used.IndexSize {
		return nil, ferr(usedAt+48, "index size", ErrFormat, "%d entries for %d bytes in %d-byte blocks (need %d)", used.IndexSize, used.OriginalSize, bs, needed)
	}

	z.algo = Algorithm(used.Algo)
	z.verify = used.Verify != 0 // the file decides, as in overlaybd (docs/format-zfile.md §8)
	z.bs = int(bs)
	z.shift = uint(bits.TrailingZeros32(bs))
	z.orig = int64(used.OriginalSize)
	z.nblocks = int(needed)
	if err := z.loadIndex(used, usedAt, dataStart, ferr); err != nil {
		return nil, err
	}
	z.info.Algorithm = z.algo
	z.info.BlockSize = z.bs
	z.info.Verify = z.verify
	z.info.NumBlocks = z.nblocks
	z.info.IndexOffset = int64(used.IndexOffset)
	z.info.IndexSize = int64(used.IndexSize)
	z.info.OriginalSize = z.orig

	if o.cache != nil {
		z.cache = o.cache
		z.fillers.New = func() any { f := &filler{z: z}; f.fn = f.fill; return f }
	}
	return z, nil
}

// loadIndex reads the block lengths, checks the index CRC and builds the jump
// table with overlaybd's rules (docs/format-zfile.md §5): one absolute offset per group of
// 65536/bs blocks and a u16 offset within the group for each block, which
// must stay below 65535.
func (z *Reader) loadIndex(used Header, usedAt, dataStart int64, ferr func(int64, string, error, string, ...any) error) error {
	n := int(used.IndexSize)
	z.gshift = 16 - z.shift
	groupMask := 1<<z.gshift - 1
	z.bases = make([]int64, 0, n>>z.gshift+1)
	z.deltas = make([]uint16, 0, n+1)
	z.bases = append(z.bases, dataStart)
	z.deltas = append(z.deltas, 0)

	minLen := uint32(1)
	if z.verify {
		minLen = 5 // a CRC and at least one byte
	}
	buf := make([]byte, min(n*4, indexChunk))
	indexAt := int64(used.IndexOffset)
	var crc uint32
	pos, delta := dataStart, uint64(0)
	for done := 0; done < n; {
		chunk := buf[:min(len(buf), (n-done)*4)]
		if err := z.readFull(chunk, indexAt+int64(done)*4); err != nil {
			return fmt.Errorf("zfile %s: reading index at offset %d: %w", z.name, indexAt+int64(done)*4, err)
		}
		crc = crc32c(crc, chunk)
		for j := 0; j < len(chunk); j += 4 {
			i := done + j/4
			l := binary.LittleEndian.Uint32(chunk[j:])
			if l < minLen || l > maxStoredLen {
				return ferr(indexAt+int64(i)*4, "index entry", ErrFormat, "block %d has stored length %d (want %d..%d)", i, l, minLen, maxStoredLen)
			}
			pos += int64(l)
			if (i+1)&groupMask == 0 {
				z.bases = append(z.bases, pos)
				z.deltas = append(z.deltas, 0)
				delta = 0
				continue
			}
			delta += uint64(l)
			if delta >= 65535 {
				return ferr(indexAt+int64(i)*4, "index entry", ErrFormat, "blocks %d..%d of a jump-table group span %d bytes (overlaybd's limit is 65534)", i&^groupMask, i, delta)
			}
			z.deltas = append(z.deltas, uint16(delta))
		}
		done += len(chunk) / 4
	}
	if pos > indexAt {
		return ferr(usedAt+40, "index", ErrFormat, "blocks end at offset %d, after the index at %d", pos, indexAt)
	}
	z.info.CompressedBytes = pos - dataStart
	if used.Flags&FlagDigest != 0 {
		if crc != used.IndexCRC {
			return ferr(usedAt+64, "index CRC", ErrChecksum, "stored %#08x, computed %#08x", used.IndexCRC, crc)
		}
		z.info.IndexCRCChecked = true
	}
	return nil
}

// Close closes the Reader's cache if it is an io.Closer (see WithCache). It
// does not close the backing io.ReaderAt; the Reader stays usable.
// Idempotent.
func (z *Reader) Close() error {
	if c, ok := z.cache.(io.Closer); ok && z.closed.CompareAndSwap(false, true) {
		return c.Close()
	}
	return nil
}

// readFull reads len(p) bytes at off; a short read is io.ErrUnexpectedEOF.
func (z *Reader) readFull(p []byte, off int64) error {
	n, err := z.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// blockOff is the offset of stored block i in the ZFile (i == NumBlocks gives
// the end of the last block).
func (z *Reader) blockOff(i int) int64 {
	return z.bases[i>>z.gshift] + int64(z.deltas[i])
}

// blockLen is the decoded length of block i.
func (z *Reader) blockLen(i int) int {
	return int(min(int64(z.bs), z.orig-int64(i)<<z.shift))
}

// Size is the decompressed size (original_file_size).
func (z *Reader) Size() int64 { return z.orig }

// BlockSize is the decompressed size of every block but the last.
func (z *Reader) BlockSize() int { return z.bs }

// NumBlocks is the number of blocks covering Size.
func (z *Reader) NumBlocks() int { return z.nblocks }

// Info returns the fields of the open file.
func (z *Reader) Info() Info { return z.info }

// Name is the name given with WithName.
func (z *Reader) Name() string { return z.name }

// ReadAt reads decompressed bytes at off. It returns io.EOF with a short
// count at the end of the content. Safe for concurrent use.
func (z *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("zfile %s: negative offset %d", z.name, off)
	}
	if off >= z.orig {
		if len(p) == 0 && off == z.orig {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if rem := z.orig - off; int64(len(p)) > rem {
		p, eof = p[:rem], io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if z.cache != nil {
		n, err = z.readCached(p, off)
	} else {
		n, err = z.readDirect(p, off)
	}
	if err != nil {
		return n, err
	}
	return n, eof
}

// readDirect decodes the blocks covering p, fetching their compressed bytes
// in runs of up to batchSize with one backing ReadAt each. Whole blocks are
// decoded straight into p; partial ones go through a pooled block buffer.
func (z *Reader) readDirect(p []byte, off int64) (int, error) {
	first := int(off >> z.shift)
	last := int((off + int64(len(p)) - 1) >> z.shift)
	bp := batchPool.Get().(*[]byte)
	var sp *[]byte
	defer func() {
		batchPool.Put(bp)
		if sp != nil {
			blockPool.Put(sp)
		}
	}()
	batch := *bp
	end := off + int64(len(p))
	done := 0
	for i := first; i <= last; {
		start := z.blockOff(i)
		j := i + 1
		for j <= last && z.blockOff(j+1)-start <= int64(len(batch)) {
			j++
		}
		buf := batch[:z.blockOff(j)-start]
		if err := z.readFull(buf, start); err != nil {
			return done, &BlockError{File: z.name, Block: i, Offset: start, Err: err}
		}
		for k := i; k < j; k++ {
			stored := buf[z.blockOff(k)-start : z.blockOff(k+1)-start]
			bstart := int64(k) << z.shift
			blen := z.blockLen(k)
			lo, hi := max(off, bstart), min(end, bstart+int64(blen))
			if lo == bstart && hi == bstart+int64(blen) {
				if err := z.decodeOrHeal(k, stored, p[lo-off:hi-off]); err != nil {
					return done, err
				}
			} else {
				if sp == nil {
					sp = blockPool.Get().(*[]byte)
				}
				tmp := (*sp)[:blen]
				if err := z.decodeOrHeal(k, stored, tmp); err != nil {
					return done, err
				}
				copy(p[lo-off:hi-off], tmp[lo-bstart:hi-bstart])
			}
			done = int(hi - off)
		}
		i = j
	}
	return done, nil
}

// decodeOrHeal is decode, plus self-healing: when block k fails its CRC
// or does not decode and the backing data can be refetched, the block's
// stored range is dropped, read again and decoded once more. If it is still
// bad it is dropped again (so no bad copy stays cached) and the read fails:
// never wrong bytes.
func (z *Reader) decodeOrHeal(k int, stored, dst []byte) error {
	err := z.decode(k, stored, dst)
	if err == nil || z.inv == nil || !(errors.Is(err, ErrChecksum) || errors.Is(err, ErrCorrupt)) {
		return err
	}
	off, n := z.blockOff(k), z.blockOff(k+1)-z.blockOff(k)
	if ierr := z.inv.Invalidate(off, n); ierr != nil {
		return fmt.Errorf("%w (refetch impossible: %v)", err, ierr)
	}
	fresh := make([]byte, n) // error path: allocating is fine
	if rerr := z.readFull(fresh, off); rerr != nil {
		return fmt.Errorf("%w (refetch failed: %v)", err, rerr)
	}
	if err2 := z.decode(k, fresh, dst); err2 != nil {
		z.inv.Invalidate(off, n)
		return fmt.Errorf("%w (still bad after a refetch)", err2)
	}
	slog.Warn("zfile: block failed its check; refetched it and it is good now", "file", z.name, "block", k, "offset", off, "error", err)
	return nil
}

// decode checks the CRC of stored block k and decompresses it into dst,
// which must come out exactly full.
func (z *Reader) decode(k int, stored, dst []byte) error {
	if z.verify {
		payload := stored[:len(stored)-4]
		want := binary.LittleEndian.Uint32(stored[len(stored)-4:])
		if got := crc32c(BlockCRCSeed, payload); got != want {
			return &BlockError{File: z.name, Block: k, Offset: z.blockOff(k),
				Err: fmt.Errorf("%w: stored CRC32C %#08x, computed %#08x", ErrChecksum, want, got)}
		}
		stored = payload
	}
	var n int
	var err error
	switch z.algo {
	case LZ4:
		n, err = lz4.UncompressBlock(stored, dst)
	case Zstd:
		var out []byte
		out, err = zstdDecoder().DecodeAll(stored, dst[:0:len(dst)])
		n = len(out)
		if err == nil && n > 0 && &out[0] != &dst[0] {
			// Cannot happen with WithDecodeAllCapLimit; never return the
			// wrong buffer if it does.
			n = copy(dst, out)
		}
	}
	if err != nil {
		return &BlockError{File: z.name, Block: k, Offset: z.blockOff(k), Err: fmt.Errorf("%w: %s: %v", ErrCorrupt, z.algo, err)}
	}
	if n != len(dst) {
		return &BlockError{File: z.name, Block: k, Offset: z.blockOff(k), Err: fmt.Errorf("%w: decoded %d bytes, want %d", ErrCorrupt, n, len(dst))}
	}
	return nil
}

// filler decodes blocks for the cache. One is taken from the Reader's pool for
// each ReadAt, so its fill method value is made once, not per request. On the
// first miss it fetches the compressed bytes of the run of blocks from the
// missing one to the last one of the read, so a cold sequential read still
// does one backing ReadAt per batch.
type filler struct {
	z      *Reader
	fn     func([]byte) (int, error)
	block  int // the block Get is asked for
	last   int // last block of the current ReadAt
	lo, hi int // blocks [lo, hi) are in batch
	start  int64
	bp     *[]byte
}

func (f *filler) fill(buf []byte) (int, error) {
	z, k := f.z, f.block
	if k < f.lo || k >= f.hi {
		if f.bp == nil {
			f.bp = batchPool.Get().(*[]byte)
		}
		batch := *f.bp
		start := z.blockOff(k)
		j := k + 1
		for j <= f.last && z.blockOff(j+1)-start <= int64(len(batch)) {
			j++
		}
		if err := z.readFull(batch[:z.blockOff(j)-start], start); err != nil {
			f.lo, f.hi = 0, 0
			return 0, &BlockError{File: z.name, Block: k, Offset: start, Err: err}
		}
		f.lo, f.hi, f.start = k, j, start
	}
	stored := (*f.bp)[z.blockOff(k)-f.start : z.blockOff(k+1)-f.start]
	blen := z.blockLen(k)
	if err := z.decodeOrHeal(k, stored, buf[:blen]); err != nil {
		return 0, err
	}
	return blen, nil
}

func (z *Reader) readCached(p []byte, off int64) (int, error) {
	first := int(off >> z.shift)
	last := int((off + int64(len(p)) - 1) >> z.shift)
	f := z.fillers.Get().(*filler)
	f.last, f.lo, f.hi = last, 0, 0
	defer func() {
		if f.bp != nil {
			batchPool.Put(f.bp)
			f.bp = nil
		}
		z.fillers.Put(f)
	}()
	// Whole blocks may be decoded straight into p (the cache decides: see
	// blockcache.Layer.ReadBlock); blocks read in part go through the cache,
	// since the neighbouring reads want the rest of them.
	end := off + int64(len(p))
	done := 0
	for k := first; k <= last; k++ {
		bstart := int64(k) << z.shift
		blen := z.blockLen(k)
		lo, hi := max(off, bstart), min(end, bstart+int64(blen))
		f.block = k
		whole := lo == bstart && hi == bstart+int64(blen)
		n, err := z.cache.ReadBlock(int64(k), z.bs, int(lo-bstart), p[lo-off:hi-off], whole, f.fn)
		if err != nil {
			return done, err
		}
		if int64(n) != hi-lo {
			return done, &BlockError{File: z.name, Block: k, Offset: z.blockOff(k),
				Err: fmt.Errorf("%w: cache returned %d bytes, want %d", ErrCorrupt, n, hi-lo)}
		}
		done = int(hi - off)
	}
	return done, nil
}

// Verify checks the CRC of every block and decodes it. The error names the
// first bad block.
func (z *Reader) Verify() error {
	bp := batchPool.Get().(*[]byte)
	sp := blockPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	defer blockPool.Put(sp)
	batch := *bp
	for i := 0; i < z.nblocks; {
		start := z.blockOff(i)
		j := i + 1
		for j < z.nblocks && z.blockOff(j+1)-start <= int64(len(batch)) {
			j++
		}
		buf := batch[:z.blockOff(j)-start]
		if err := z.readFull(buf, start); err != nil {
			return &BlockError{File: z.name, Block: i, Offset: start, Err: err}
		}
		for k := i; k < j; k++ {
			stored := buf[z.blockOff(k)-start : z.blockOff(k+1)-start]
			if err := z.decode(k, stored, (*sp)[:z.blockLen(k)]); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// Decompress writes the whole decompressed content of r to dst, like
// `overlaybd-zfile -x`.
func Decompress(dst io.Writer, r *Reader) error {
	buf := make([]byte, 1<<20)
	_, err := io.CopyBuffer(dst, io.NewSectionReader(r, 0, r.Size()), buf)
	return err
}
