package tarwrap

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

// TestHeaderBytes checks every field of the PAX form against docs/format-tar.md §2 (values of
// the hello-world blob: member size 639491, mode 0100644).
func TestHeaderBytes(t *testing.T) {
	const size = 639491
	h := Header(size, 0o100644)
	if len(h) != 1536 {
		t.Fatalf("len %d", len(h))
	}
	field := func(b []byte, off, n int) string { return string(b[off : off+n]) }
	nul := func(n int) string { return strings.Repeat("\x00", n) }
	pax, rec, u := h[:512], h[512:1024], h[1024:]
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"pax name", field(pax, 0, 100), "overlaybd.pax" + nul(87)},
		{"pax mode/uid/gid", field(pax, 100, 24), nul(24)},
		{"pax size", field(pax, 124, 12), "         17 "},
		{"pax mtime", field(pax, 136, 12), nul(12)},
		{"pax typeflag", field(pax, 156, 1), "x"},
		{"pax linkname", field(pax, 157, 100), nul(100)},
		{"pax magic", field(pax, 257, 6), "ustar\x00"},
		{"pax version", field(pax, 263, 2), "00"},
		{"pax rest", field(pax, 265, 247), nul(247)},
		{"pax record", field(rec, 0, 15), "15 size=639491\n"},
		{"pax data padding", field(rec, 15, 497), nul(497)},
		{"name", field(u, 0, 100), "overlaybd.commit" + nul(84)},
		{"mode", field(u, 100, 8), "100644 \x00"},
		{"uid", field(u, 108, 8), "     0 \x00"},
		{"gid", field(u, 116, 8), "     0 \x00"},
		{"size", field(u, 124, 12), "          0 "},
		{"mtime", field(u, 136, 12), "          0 "},
		{"typeflag", field(u, 156, 1), "0"},
		{"linkname", field(u, 157, 100), nul(100)},
		{"magic", field(u, 257, 6), "ustar\x00"},
		{"version", field(u, 263, 2), "00"},
		{"uname", field(u, 265, 32), "root" + nul(28)},
		{"gname", field(u, 297, 32), "root" + nul(28)},
		{"dev/prefix/pad", field(u, 329, 183), nul(183)},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	// Checksums: libtar int_to_oct, "%6o " and a NUL, equal to the byte sum
	// with the field as spaces.
	for _, b := range [][]byte{pax, u} {
		c := field(b, 148, 8)
		if c[6] != ' ' || c[7] != 0 {
			t.Errorf("checksum field %q: want 6 octal columns, space, NUL", c)
		}
		if !isHeader(b) {
			t.Errorf("checksum %q does not verify", c)
		}
	}
	if got, want := len(Trailer(size)), 1024+(512-size%512); got != want {
		t.Errorf("trailer %d bytes, want %d", got, want)
	}
	if got := WrappedSize(size); got != 642560 {
		t.Errorf("wrapped size %d, want 642560 (hello-world blob)", got)
	}
}

func wrap(member []byte) []byte {
	var b bytes.Buffer
	b.Write(Header(int64(len(member)), 0o644))
	b.Write(member)
	b.Write(Trailer(int64(len(member))))
	return b.Bytes()
}

// TestGoTarReadsHeader: archive/tar sees one member overlaybd.commit with
// the PAX size.
func TestGoTarReadsHeader(t *testing.T) {
	member := bytes.Repeat([]byte("overlaybd"), 71054) // 639486 bytes
	tr := tar.NewReader(bytes.NewReader(wrap(member)))
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "overlaybd.commit" || h.Size != int64(len(member)) || h.Mode != 0o100644 || h.Uname != "root" || h.Typeflag != tar.TypeReg {
		t.Errorf("header %+v", h)
	}
	got, err := io.ReadAll(tr)
	if err != nil || !bytes.Equal(got, member) {
		t.Fatalf("member data differs (err %v)", err)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("second Next: %v, want io.EOF", err)
	}
}

func goTar(t testing.TB, member []byte, format tar.Format, name string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(member)), Mode: 0o644, Format: format, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(member)
	tw.Close()
	return b.Bytes()
}

// goTarPAX writes a PAX header with a record other than size, so the size
// is only in the ustar header at 1024.
func goTarPAX(t testing.TB, member []byte) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	h := &tar.Header{Name: "overlaybd.commit", Size: int64(len(member)), Mode: 0o644, Format: tar.FormatPAX,
		Typeflag: tar.TypeReg, PAXRecords: map[string]string{"comment": "obdfs"}}
	if err := tw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	tw.Write(member)
	tw.Close()
	return b.Bytes()
}

func TestPeel(t *testing.T) {
	member := []byte(strings.Repeat("ZFile layer bytes ", 1000))
	ourPAX := wrap(member)
	ustar := goTar(t, member, tar.FormatUSTAR, "overlaybd.commit")
	goPAX := goTar(t, member, tar.FormatPAX, "overlaybd.commit") // no PAX record needed: USTAR layout
	goPAXRec := goTarPAX(t, member)
	gnu := goTar(t, member, tar.FormatGNU, "overlaybd.commit")
	noPAXSize := wrap(member)
	// PAX record replaced by another key of the same length: the size
	// comes from the ustar header at 1024, which then must carry it.
	copy(noPAXSize[512:], "14 path=abcde\n") // same length as "14 size=18000\n"
	bad := func(f func([]byte)) []byte {
		b := bytes.Clone(ourPAX)
		f(b)
		return b
	}
	tests := []struct {
		name    string
		blob    []byte
		wrapped bool
		off     int64
		size    int64
		err     error
	}{
		{"overlaybd PAX form", ourPAX, true, 1536, int64(len(member)), nil},
		{"Go USTAR", ustar, true, 512, int64(len(member)), nil},
		{"Go PAX without records", goPAX, true, 512, int64(len(member)), nil},
		{"Go PAX with a record, size in ustar header", goPAXRec, true, 1536, int64(len(member)), nil},
		{"GNU is not tar to overlaybd", gnu, false, 0, int64(len(gnu)), nil},
		{"raw", member, false, 0, int64(len(member)), nil},
		{"short raw", []byte("abc"), false, 0, 3, nil},
		{"PAX without size record, ustar size 0", noPAXSize, true, 1536, 0, nil},
		{"truncated member", ourPAX[:1536+100], false, 0, 0, ErrFormat},
		{"truncated USTAR", ustar[:600], false, 0, 0, ErrFormat},
		{"bad checksum is raw", bad(func(b []byte) { b[0] ^= 1 }), false, 0, int64(len(ourPAX)), nil},
		{"bad ustar header after PAX", bad(func(b []byte) { b[1024] ^= 1 }), false, 0, 0, ErrFormat},
		{"malformed PAX record", bad(func(b []byte) { b[512] = 'x' }), false, 0, 0, ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, wrapped, err := Peel(bytes.NewReader(tt.blob), int64(len(tt.blob)))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			_, off, size := m.Outer()
			if wrapped != tt.wrapped || off != tt.off || size != tt.size {
				t.Errorf("wrapped %v off %d size %d; want %v %d %d", wrapped, off, size, tt.wrapped, tt.off, tt.size)
			}
			if tt.wrapped && tt.size == int64(len(member)) {
				got, _ := io.ReadAll(m)
				if !bytes.Equal(got, member) {
					t.Error("member bytes differ")
				}
			}
		})
	}
}

func TestParseNumeric(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"         17 ", 0o17, true},
		{"00000001750\x00", 0o1750, true},
		{"     0 \x00", 0, true},
		{"\x00\x00\x00", 0, true},
		{"\x80\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00", 1 << 32, true},
		{"\xc0\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00", 0, false},
		{"12 34", 0, false},
		{"9", 0, false},
	}
	for _, tt := range tests {
		got, err := parseNumeric([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseNumeric(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestPaxRecordLength(t *testing.T) {
	for _, v := range []string{"0", "639491", "1234567", "12345678"} {
		r := paxRecord("size", v)
		if n, _, _ := strings.Cut(r, " "); n != strconv.Itoa(len(r)) {
			t.Errorf("record %q: length %s, actual %d", r, n, len(r))
		}
	}
	// 99 -> 100 boundary: key+value+3 = 97 plus 2 digits = 99; 98 needs 3 digits.
	r := paxRecord("k", strings.Repeat("v", 94))
	if n, _, _ := strings.Cut(r, " "); n != strconv.Itoa(len(r)) {
		t.Errorf("boundary record length %s, actual %d", n, len(r))
	}
}

func FuzzPeel(f *testing.F) {
	member := []byte("member data")
	f.Add(wrap(member))
	f.Add(goTar(f, member, tar.FormatUSTAR, "overlaybd.commit"))
	f.Add(goTarPAX(f, member))
	f.Add(goTar(f, member, tar.FormatGNU, "x"))
	f.Add(wrap(nil)[:1536])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, blob []byte) {
		m, wrapped, err := Peel(bytes.NewReader(blob), int64(len(blob)))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		_, off, size := m.Outer()
		if !wrapped && (off != 0 || size != int64(len(blob))) {
			t.Fatalf("not wrapped but section %d+%d", off, size)
		}
		if off < 0 || size < 0 || off+size > int64(len(blob)) {
			t.Fatalf("section %d+%d outside %d-byte blob", off, size, len(blob))
		}
		if wrapped && off != 512 && off != 1536 {
			t.Fatalf("data offset %d", off)
		}
	})
}
