package lsmt

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// Sizes and limits of the format (docs/format-lsmt.md §1).
const (
	SectorSize     = 512           // LSMT unit ("ALIGNMENT")
	HeaderSize     = 4096          // header and trailer space
	HeaderStructSz = 390           // value of Header.Size
	RecordSize     = 16            // one index record
	UserTagSize    = 256           // commit message bytes
	UUIDSize       = 37            // 36 chars + NUL
	InvalidOffset  = 1<<50 - 1     // offset of padding / invalid records
	MaxOffset      = InvalidOffset // largest logical sector
	MaxLength      = 1<<14 - 1     // 16383 sectors per record
	MaxMOffset     = 1<<55 - 1     // largest mapped sector
	MaxLayers      = 255           // RO layers stacked together
	MaxROIndexSize = 1_000_000     // trailer index_size limit, padding included
	MaxIndexSize   = 128_000_000   // RW log and merged index limit
	MaxIOSize      = 4 << 20       // overlaybd splits writes at this size
	Version        = 1             // header version
	SubVersion     = 1             // header sub_version
	dataStart      = HeaderSize / SectorSize
)

// MaxVirtualSize is the largest virtual size, in bytes, the index's 50-bit
// sector offsets can address.
const MaxVirtualSize = MaxOffset * SectorSize

// virtualSizeAt is the byte offset of virtual_size in a header or trailer.
const virtualSizeAt = 48

// checkVirtualSize refuses a header's virtual size that is not a multiple
// of 512 or lies past the address space: such a size cannot be served (it
// would show as a negative or unaligned disk size). at is the header's
// offset in name; field names it ("trailer", "header").
func checkVirtualSize(name string, at int64, field string, vs uint64) error {
	if vs%SectorSize != 0 || vs > MaxVirtualSize {
		return formatErr(name, at+virtualSizeAt, field+".virtual_size", "%d bytes: not a multiple of %d at most %d", vs, SectorSize, uint64(MaxVirtualSize))
	}
	return nil
}

// Header flags (docs/format-lsmt.md §2.2).
const (
	FlagHeader = 1 << 0 // set in a header, clear in a trailer
	FlagData   = 1 << 1 // data file; clear in an RW index file
	FlagSealed = 1 << 2 // index present at index_offset
	FlagSparse = 1 << 4 // sparse RW layer
)

// Magic0 is the first header word, "LSMT\0\1\2\0" read as little-endian.
const Magic0 uint64 = 0x00020100544D534C

// Magic1 is the second magic: a Photon UUID stored little-endian
// (docs/format-lsmt.md §2.1).
var Magic1 = [16]byte{0x65, 0x7E, 0x63, 0xD2, 0x94, 0x44, 0x08, 0x4C, 0xA2, 0xD2, 0xC8, 0xEC, 0x4F, 0xCF, 0xAE, 0x8A}

// nullUUID is how an unset uuid is written (not as zero bytes).
const nullUUID = "00000000-0000-0000-0000-000000000000"

// Header is the 4096-byte LSMT header or trailer, in file order. It is
// encoded with encoding/binary (little-endian); the blank tail is written as
// zeros and ignored when read.
type Header struct {
	Magic0      uint64
	Magic1      [16]byte
	Size        uint32 // HeaderStructSz
	Flags       uint32
	IndexOffset uint64 // bytes
	IndexSize   uint64 // records
	VirtualSize uint64 // bytes
	UUID        [UUIDSize]byte
	ParentUUID  [UUIDSize]byte
	Reserved    uint16
	Version     uint8
	SubVersion  uint8
	UserTag     [UserTagSize]byte
	_           [HeaderSize - HeaderStructSz]byte
}

// newHeader returns a header with magics, size, versions and null uuids set.
func newHeader(flags uint32) Header {
	h := Header{Magic0: Magic0, Magic1: Magic1, Size: HeaderStructSz, Flags: flags, Version: Version, SubVersion: SubVersion}
	h.SetUUID(nullUUID)
	h.SetParentUUID(nullUUID)
	return h
}

// ParseHeader decodes a header or trailer from the first HeaderSize bytes of
// b. It checks only that b is long enough; see Valid.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: header needs %d bytes, have %d", ErrFormat, HeaderSize, len(b))
	}
	if _, err := binary.Decode(b[:HeaderSize], binary.LittleEndian, &h); err != nil {
		return h, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return h, nil
}

// MarshalBinary encodes h into HeaderSize bytes.
func (h *Header) MarshalBinary() ([]byte, error) {
	b := make([]byte, HeaderSize)
	if _, err := binary.Encode(b, binary.LittleEndian, h); err != nil {
		return nil, err
	}
	return b, nil
}

// UnmarshalBinary is ParseHeader as a method.
func (h *Header) UnmarshalBinary(b []byte) error {
	v, err := ParseHeader(b)
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// MagicOK reports whether both magics match.
func (h *Header) MagicOK() bool { return h.Magic0 == Magic0 && h.Magic1 == Magic1 }

func (h *Header) IsHeader() bool { return h.Flags&FlagHeader != 0 }
func (h *Header) IsData() bool   { return h.Flags&FlagData != 0 }
func (h *Header) IsSealed() bool { return h.Flags&FlagSealed != 0 }
func (h *Header) IsSparse() bool { return h.Flags&FlagSparse != 0 }

// UUIDString returns the uuid field as text (up to the first NUL).
func (h *Header) UUIDString() string { return cstring(h.UUID[:]) }

// ParentUUIDString returns the parent_uuid field as text.
func (h *Header) ParentUUIDString() string { return cstring(h.ParentUUID[:]) }

// Tag returns the user tag (commit message).
func (h *Header) Tag() string { return cstring(h.UserTag[:]) }

// SetUUID stores u (normalised to uppercase; "" means null). It fails on a
// malformed uuid.
func (h *Header) SetUUID(u string) error { return setUUID(&h.UUID, u) }

// SetParentUUID stores the parent uuid like SetUUID.
func (h *Header) SetParentUUID(u string) error { return setUUID(&h.ParentUUID, u) }

// SetTag stores the user tag, truncated to UserTagSize bytes.
func (h *Header) SetTag(s string) {
	clear(h.UserTag[:])
	copy(h.UserTag[:], s)
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func setUUID(dst *[UUIDSize]byte, u string) error {
	n, err := normalizeUUID(u)
	if err != nil {
		return err
	}
	clear(dst[:])
	copy(dst[:], n)
	return nil
}

// validUUID reports whether s has the 8-4-4-4-12 hex form (any case).
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// normalizeUUID returns the uppercase form overlaybd writes; "" gives nullUUID.
func normalizeUUID(s string) (string, error) {
	if s == "" {
		return nullUUID, nil
	}
	if !validUUID(s) {
		return "", fmt.Errorf("lsmt: malformed uuid %q", s)
	}
	return strings.ToUpper(s), nil
}

// IsNullUUID reports whether s is empty or the all-zero uuid.
func IsNullUUID(s string) bool { return s == "" || s == nullUUID }

// newUUID returns a random version-4 uuid in uppercase string form.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return UUIDFromBytes(b)
}

// UUIDFromBytes formats 16 bytes in plain byte order (docs/format-lsmt.md §2.3).
func UUIDFromBytes(b [16]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return strings.ToUpper(string(s[:]))
}

// Record is one segment mapping (docs/format-lsmt.md §3.1): Length sectors at virtual
// sector Offset are stored at sector MOffset of file number Tag, or read as
// zeros when Zeroed.
type Record struct {
	Offset  uint64 // 50 bits
	Length  uint64 // 14 bits; 0 only in padding
	MOffset uint64 // 55 bits
	Zeroed  bool
	Tag     uint8
}

// DecodeRecord decodes the 16 bytes at b.
func DecodeRecord(b []byte) Record {
	_ = b[15]
	w0 := binary.LittleEndian.Uint64(b)
	w1 := binary.LittleEndian.Uint64(b[8:])
	return Record{
		Offset:  w0 & (1<<50 - 1),
		Length:  w0 >> 50,
		MOffset: w1 & (1<<55 - 1),
		Zeroed:  w1>>55&1 != 0,
		Tag:     uint8(w1 >> 56),
	}
}

// Encode writes r into b[:16]. Fields wider than their bit-field are
// truncated like the C++ bit-fields would.
func (r Record) Encode(b []byte) {
	_ = b[15]
	w0 := r.Offset&(1<<50-1) | (r.Length&MaxLength)<<50
	w1 := r.MOffset&(1<<55-1) | uint64(r.Tag)<<56
	if r.Zeroed {
		w1 |= 1 << 55
	}
	binary.LittleEndian.PutUint64(b, w0)
	binary.LittleEndian.PutUint64(b[8:], w1)
}

// End is the first virtual sector after r.
func (r Record) End() uint64 { return r.Offset + r.Length }

// mEnd is the first mapped sector after r; zeroed records occupy none.
func (r Record) mEnd() uint64 {
	if r.Zeroed {
		return r.MOffset
	}
	return r.MOffset + r.Length
}

// invalid reports whether r is a padding / invalid record.
func (r Record) invalid() bool { return r.Offset == InvalidOffset }

// trim returns the part of r inside [b, e) (which must intersect r). A data
// record's moffset advances with its start; a zeroed record's does not.
func (r Record) trim(b, e uint64) Record {
	trimInPlace(&r, b, e)
	return r
}

// trimInPlace is trim on a record in place; Lookup uses it so records are
// not copied through a temporary (a stalled store-to-load forward in a
// profile of 1 MiB scans).
func trimInPlace(r *Record, b, e uint64) {
	if b > r.Offset {
		if !r.Zeroed {
			r.MOffset += b - r.Offset
		}
		r.Length -= b - r.Offset
		r.Offset = b
	}
	if end := r.End(); e < end {
		r.Length -= end - e
	}
}

func (r Record) String() string {
	z := ""
	if r.Zeroed {
		z = ",zeroed"
	}
	return fmt.Sprintf("{%d,%d,%d%s,tag %d}", r.Offset, r.Length, r.MOffset, z, r.Tag)
}

var invalidRecord = Record{Offset: InvalidOffset}

// verifyMOffset is overlaybd's verify_mapping_moffset with the allowed
// mapped range [lo, hi) in sectors (docs/format-lsmt.md §3.3).
func (r Record) verifyMOffset(lo, hi uint64) bool {
	if r.Zeroed {
		return lo <= r.MOffset && r.MOffset <= hi
	}
	return lo <= r.MOffset && r.MOffset < hi && lo < r.MOffset+r.Length && r.MOffset+r.Length <= hi
}
