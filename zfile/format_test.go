package zfile

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestHeaderSize(t *testing.T) {
	if n := binary.Size(Header{}); n != StructSize {
		t.Fatalf("binary.Size(Header) = %d, want %d", n, StructSize)
	}
	if Magic0 != 281910587246170 {
		t.Errorf("Magic0 = %d", Magic0)
	}
	h := Header{Magic0: Magic0, Magic1: Magic1}
	b, _ := h.MarshalBinary()
	if len(b) != HeaderSize || !bytes.Equal(b[:8], []byte("ZFile\x00\x01\x00")) || string(b[8:24]) != "tuji.yyf@Alibaba" {
		t.Errorf("encoded magic % x", b[:24])
	}
}

func TestCRC32CVectors(t *testing.T) {
	zero := make([]byte, 4096)
	tests := []struct {
		seed uint32
		in   []byte
		want uint32
	}{
		{0, []byte("123456789"), 0x58E3FA20},
		{BlockCRCSeed, []byte("123456789"), 0x3C9BD4E0},
		{0, zero, 0},
		{BlockCRCSeed, zero, 0x18746CCD},
	}
	for _, tt := range tests {
		if got := CRC32C(tt.seed, tt.in); got != tt.want {
			t.Errorf("CRC32C(%d, %q...) = %#08x, want %#08x", tt.seed, tt.in[:min(9, len(tt.in))], got, tt.want)
		}
	}
}

// TestHeaderRoundTrip decodes every header and trailer of the fixtures,
// re-encodes and re-seals it, and gets the same 512 bytes (digest included).
func TestHeaderRoundTrip(t *testing.T) {
	for _, f := range []string{"oracle/b/base.lz4.zfile", "oracle/b/base.lz4.tool.zfile", "oracle/c/base.zstd.zfile", "oracle/c/base.zstd.tool.zfile"} {
		data := readFixture(t, f)
		for _, area := range [][]byte{data[:512], data[len(data)-512:]} {
			var h Header
			if err := h.UnmarshalBinary(area); err != nil {
				t.Fatal(err)
			}
			want := h.Digest
			if got := h.Seal(); !bytes.Equal(got, area) || h.Digest != want {
				t.Errorf("%s: re-encoded area differs (digest %#x, stored %#x)", f, h.Digest, want)
			}
		}
		// FinalHeader from the trailer = overlaybd-commit's header.
		if f == "oracle/b/base.lz4.zfile" || f == "oracle/c/base.zstd.zfile" {
			var tr Header
			tr.UnmarshalBinary(data[len(data)-512:])
			if got := finalHeader(tr); !bytes.Equal(got, data[:512]) {
				t.Errorf("%s: finalHeader(trailer) differs from the header", f)
			}
		}
	}
}
