package zfile

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Layout constants (docs/format-zfile.md §1).
const (
	// HeaderSize is the space taken by the header and by the trailer.
	HeaderSize = 512
	// StructSize is the size of the encoded Header struct (the "size" field).
	StructSize = 96

	// DefaultBlockSize is the block size the overlaybd tools use by default.
	DefaultBlockSize = 4096
	// MinBlockSize and MaxBlockSize bound the block sizes the tools accept
	// (--bs 4..64); the reader accepts any power of two up to MaxBlockSize.
	MinBlockSize = 4 << 10
	MaxBlockSize = 64 << 10

	// MaxStoredBlock is the largest stored block (compressed bytes plus CRC)
	// overlaybd can read: its read buffer is MAX_READ_SIZE = 64 KiB (docs/format-zfile.md §8).
	MaxStoredBlock = 64 << 10

	// MaxIndexSize is overlaybd's MAX_ZFILE_INDEX_SIZE.
	MaxIndexSize = 1_000_000_000

	// BlockCRCSeed is the seed ("salt") of the per-block CRC32C.
	BlockCRCSeed = 100007

	// Magic0 is the first magic as a little-endian u64 ("ZFile\0\1\0").
	Magic0 uint64 = 0x0001_0065_6C69_465A
)

// Magic1 is the second magic, at offset 8.
var Magic1 = [16]byte{'t', 'u', 'j', 'i', '.', 'y', 'y', 'f', '@', 'A', 'l', 'i', 'b', 'a', 'b', 'a'}

// Flag bits (u64 at offset 32, docs/format-zfile.md §3). Only bits 0..5 have a meaning; the
// others are ignored because 2021 writers left garbage in them (docs/format-zfile.md §10).
const (
	FlagHeader          uint64 = 1 << 0 // header (1) or trailer (0)
	FlagDataFile        uint64 = 1 << 1 // always set
	FlagSealed          uint64 = 1 << 2 // set in the trailer
	FlagHeaderOverwrite uint64 = 1 << 3 // header rewritten with the final index fields
	FlagDigest          uint64 = 1 << 4 // digest and index_crc are valid
	FlagIndexCompressed uint64 = 1 << 5 // defined, never written, not honoured
)

// Flag values written by the current tools.
const (
	FlagsInitialHeader = FlagHeader | FlagDataFile | FlagDigest                       // 0x13
	FlagsTrailer       = FlagDataFile | FlagSealed | FlagDigest                       // 0x16
	FlagsFinalHeader   = FlagHeader | FlagDataFile | FlagHeaderOverwrite | FlagDigest // 0x1B
)

// Algorithm is the block compression algorithm (the "algo" byte).
type Algorithm uint8

// Algorithms overlaybd implements. Id 0 (MiniLZO) is declared upstream but
// not implemented, so it is rejected like any other value.
const (
	LZ4  Algorithm = 1
	Zstd Algorithm = 2
)

func (a Algorithm) String() string {
	switch a {
	case LZ4:
		return "lz4"
	case Zstd:
		return "zstd"
	case 0:
		return "minilzo"
	}
	return fmt.Sprintf("algorithm(%d)", uint8(a))
}

// Header is the 96-byte header/trailer struct at the start of the 512-byte
// header and trailer areas (docs/format-zfile.md §2). The rest of the 512 bytes is zero when
// written, and ignored when read (it is covered by Digest, though).
type Header struct {
	Magic0       uint64   // 0
	Magic1       [16]byte // 8
	Size         uint32   // 24: StructSize
	Digest       uint32   // 28: raw CRC32C of the 512 bytes with this field zeroed
	Flags        uint64   // 32
	IndexOffset  uint64   // 40: byte offset of the jump table
	IndexSize    uint64   // 48: number of blocks (u32 entries)
	OriginalSize uint64   // 56: decompressed size
	IndexCRC     uint32   // 64: raw CRC32C of the index bytes
	Reserved0    uint32   // 68
	BlockSize    uint32   // 72
	Algo         uint8    // 76
	Level        uint8    // 77: ignored (zstd is always level 3)
	UseDict      uint8    // 78
	_            uint8    // 79
	Reserved1    uint32   // 80
	DictSize     uint32   // 84
	Verify       uint8    // 88: 1 = a 4-byte CRC follows every block
	_            [7]byte  // 89
}

const digestOffset = 28

// IsHeader reports whether flag bit 0 is set.
func (h *Header) IsHeader() bool { return h.Flags&FlagHeader != 0 }

func (h *Header) magicOK() bool { return h.Magic0 == Magic0 && h.Magic1 == Magic1 }

// MarshalBinary encodes h into a zeroed 512-byte area. The Digest field is
// written as is; use Seal to compute it.
func (h *Header) MarshalBinary() ([]byte, error) {
	b := make([]byte, HeaderSize)
	if _, err := binary.Encode(b, binary.LittleEndian, h); err != nil {
		return nil, err
	}
	return b, nil
}

// UnmarshalBinary decodes the struct from the first 96 bytes of b.
func (h *Header) UnmarshalBinary(b []byte) error {
	if len(b) < StructSize {
		return fmt.Errorf("zfile: header needs %d bytes, have %d", StructSize, len(b))
	}
	_, err := binary.Decode(b[:StructSize], binary.LittleEndian, h)
	return err
}

// Seal sets Digest to the digest of h encoded into 512 bytes and returns the
// encoding.
func (h *Header) Seal() []byte {
	h.Digest = 0
	b, _ := h.MarshalBinary() // cannot fail: fixed-size struct into 512 bytes
	h.Digest = headerDigest(b)
	binary.LittleEndian.PutUint32(b[digestOffset:], h.Digest)
	return b
}

// headerDigest is the raw CRC32C (seed 0) of a 512-byte area with the digest
// field taken as zero; the code covers all 512 bytes, not 28..511 as the
// upstream spec text says (docs/format-zfile.md §4).
func headerDigest(b []byte) uint32 {
	var zero [4]byte
	c := crc32c(0, b[:digestOffset])
	c = crc32c(c, zero[:])
	return crc32c(c, b[digestOffset+4:HeaderSize])
}

// hasMagic reports whether b starts with both magics.
func hasMagic(b []byte) bool {
	return len(b) >= 24 && binary.LittleEndian.Uint64(b) == Magic0 && bytes.Equal(b[8:24], Magic1[:])
}
