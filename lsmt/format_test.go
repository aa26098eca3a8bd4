package lsmt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

func TestHeaderSize(t *testing.T) {
	if n := binary.Size(Header{}); n != HeaderSize {
		t.Fatalf("binary.Size(Header) = %d, want %d", n, HeaderSize)
	}
	h := newHeader(FlagHeader | FlagData)
	b, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:8], []byte("LSMT\x00\x01\x02\x00")) {
		t.Fatalf("magic0 bytes % x", b[:8])
	}
	if got := hex.EncodeToString(b[8:24]); got != "657e63d29444084ca2d2c8ec4fcfae8a" {
		t.Fatalf("magic1 bytes %s", got)
	}
	if binary.LittleEndian.Uint32(b[24:]) != 390 || b[132] != 1 || b[133] != 1 {
		t.Fatalf("size/version wrong: % x", b[24:28])
	}
	if string(b[56:92]) != nullUUID || b[92] != 0 || string(b[93:129]) != nullUUID {
		t.Fatalf("uuid fields: %q %q", b[56:93], b[93:130])
	}
	h2, err := ParseHeader(b)
	if err != nil || h2 != h {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParseHeader(b[:100]); err == nil {
		t.Fatal("short header accepted")
	}
}

func TestUUID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", nullUUID, true},
		{"0bd00003-0000-4000-8000-000000000003", "0BD00003-0000-4000-8000-000000000003", true},
		{"0BD00003-0000-4000-8000-00000000000", "", false},
		{"0bd00003x0000-4000-8000-000000000003", "", false},
		{"0bd0000g-0000-4000-8000-000000000003", "", false},
	}
	for _, tt := range tests {
		got, err := normalizeUUID(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("normalizeUUID(%q) = %q, %v", tt.in, got, err)
		}
	}
	u := newUUID()
	if !validUUID(u) || u[14] != '4' || u != UUIDFromBytes(mustParseUUIDBytes(t, u)) {
		t.Fatalf("newUUID %q", u)
	}
	var h Header
	if err := h.SetUUID("01bb4fce-3eb1-b56b-05ad-f99504dafd31"); err != nil || h.UUIDString() != "01BB4FCE-3EB1-B56B-05AD-F99504DAFD31" {
		t.Fatalf("SetUUID: %v %q", err, h.UUIDString())
	}
}

func mustParseUUIDBytes(t *testing.T, s string) (b [16]byte) {
	t.Helper()
	raw, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
	if err != nil {
		t.Fatal(err)
	}
	copy(b[:], raw)
	return b
}

// The bit-field vector of docs/format-lsmt.md §10, checked against g++'s
// layout of the C++ struct.
func TestRecordBitfield(t *testing.T) {
	r := Record{Offset: 0x123456789AB, Length: 0x2ABC, MOffset: 0x1234567890ABCD, Zeroed: true, Tag: 0x7F}
	want, _ := hex.DecodeString("AB8967452301F0AACDAB90785634927F")
	var b [16]byte
	r.Encode(b[:])
	if !bytes.Equal(b[:], want) {
		t.Fatalf("Encode = % X, want % X", b, want)
	}
	if got := DecodeRecord(want); got != r {
		t.Fatalf("DecodeRecord = %v, want %v", got, r)
	}
	var inv [16]byte
	invalidRecord.Encode(inv[:])
	if hex.EncodeToString(inv[:]) != "ffffffffffff03000000000000000000" {
		t.Fatalf("invalid record bytes % x", inv)
	}
}

func FuzzRecord(f *testing.F) {
	f.Add([]byte("\xAB\x89\x67\x45\x23\x01\xF0\xAA\xCD\xAB\x90\x78\x56\x34\x92\x7F"))
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 16 {
			return
		}
		r := DecodeRecord(b)
		var out [16]byte
		r.Encode(out[:])
		if !bytes.Equal(out[:], b[:16]) {
			t.Fatalf("round trip % x -> %v -> % x", b[:16], r, out)
		}
		if r.Length > MaxLength || r.Offset > InvalidOffset || r.MOffset > MaxMOffset {
			t.Fatalf("field out of range: %v", r)
		}
	})
}
