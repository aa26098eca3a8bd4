package tarwrap

// Interop audit: tar wrappers as real producers write them
// (docs/format-tar.md §2, §3).

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing"
)

// aciTar wraps member the way ACI's uploadBaseLayer does: Go archive/tar,
// default format, name overlaybd.commit, mode 0444, then Close.
func aciTar(t testing.TB, member []byte) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: "overlaybd.commit", Mode: 0o444, Size: int64(len(member)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(member)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestInteropWrappers(t *testing.T) {
	member := bytes.Repeat([]byte("overlaybd layer\n"), 3001) // not a multiple of 512
	ours := wrap(member)
	aci := aciTar(t, member)
	// ACI's embedded convertor copies an overlaybd-wrapped commit into a Go
	// tar.Writer stream and closes it: 1024 more zero bytes (docs/format-tar.md §3).
	oursPlus := append(bytes.Clone(ours), make([]byte, 1024)...)
	aciPlus := append(bytes.Clone(aci), make([]byte, 1024)...)

	// PAX size disagreeing with the file (docs/format-tar.md §4: the PAX record decides).
	paxSize := func(v string) []byte {
		b := bytes.Clone(ours)
		rec := paxRecord("size", v)
		if len(rec) != len(paxRecord("size", strconv.Itoa(len(member)))) {
			t.Fatalf("record length changed: %q", rec)
		}
		copy(b[blockSize:], rec)
		return b
	}
	// The ustar header at 1024 carries a (wrong) non-zero size: PAX wins.
	ustarSize := bytes.Clone(ours)
	h := ustarSize[2*blockSize : 3*blockSize]
	octalNoNUL(h[offSize:offSize+12], 12345)
	setChecksum(h)

	tests := []struct {
		name     string
		blob     []byte
		off, len int64
		err      error
	}{
		{"overlaybd PAX form", ours, 1536, int64(len(member)), nil},
		{"overlaybd PAX form + 1024 zero bytes", oursPlus, 1536, int64(len(member)), nil},
		{"ACI Go USTAR 0444", aci, 512, int64(len(member)), nil},
		{"ACI Go USTAR 0444 + 1024 zero bytes", aciPlus, 512, int64(len(member)), nil},
		{"PAX size smaller than the data", paxSize(strconv.Itoa(len(member) - 1000)), 1536, int64(len(member)) - 1000, nil},
		{"PAX size 0", paxSize("00000"), 1536, 0, nil},
		{"PAX size past EOF", paxSize(strconv.Itoa(len(member) + 5000)), 0, 0, ErrFormat},
		{"PAX size far past EOF", paxSize("99999"), 0, 0, ErrFormat},
		{"ustar size disagrees with PAX", ustarSize, 1536, int64(len(member)), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, wrapped, err := Peel(bytes.NewReader(tt.blob), int64(len(tt.blob)))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err != nil {
				t.Log(err)
				return
			}
			_, off, n := m.Outer()
			if !wrapped || off != tt.off || n != tt.len {
				t.Fatalf("wrapped %v at %d size %d; want %d %d", wrapped, off, n, tt.off, tt.len)
			}
			got, _ := io.ReadAll(m)
			if !bytes.Equal(got, member[:n]) {
				t.Fatal("member bytes differ")
			}
		})
	}
	// ACI's header is what Go writes for USTAR: one header block, mode 0444.
	if aci[offTypeflag] != '0' || string(aci[offMode:offMode+7]) != "0000444" || string(aci[offMagic:offMagic+6]) != "ustar\x00" {
		t.Fatalf("ACI header: typeflag %q mode %q magic %q", aci[offTypeflag], aci[offMode:offMode+8], aci[offMagic:offMagic+8])
	}
}
