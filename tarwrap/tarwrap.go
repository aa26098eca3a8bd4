package tarwrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
)

const (
	blockSize = 512
	// PAXDataOffset is where the member data starts in overlaybd's PAX form.
	PAXDataOffset = 3 * blockSize
	// USTARDataOffset is where it starts after a single ustar header.
	USTARDataOffset = blockSize
)

// ErrFormat means the file looks like a tar wrapper (ustar magic, version
// and checksum in its first block) but cannot be used as one.
var ErrFormat = errors.New("tarwrap: invalid tar wrapper")

// ustar header field positions (POSIX.1-1988).
const (
	offName     = 0
	offMode     = 100
	offUID      = 108
	offGID      = 116
	offSize     = 124
	offMtime    = 136
	offChksum   = 148
	offTypeflag = 156
	offMagic    = 257
	offVersion  = 263
	offUname    = 265
	offGname    = 297
)

// isHeader applies overlaybd's is_tar_file test: magic starting "ustar" (5
// characters compared), version "00", and a checksum that matches either the
// unsigned or the signed byte sum, as libtar's th_crc_ok allows.
func isHeader(b []byte) bool {
	if len(b) < blockSize || string(b[offMagic:offMagic+5]) != "ustar" || string(b[offVersion:offVersion+2]) != "00" {
		return false
	}
	stored, err := parseNumeric(b[offChksum : offChksum+8])
	if err != nil {
		return false
	}
	u, s := checksums(b)
	return stored == u || stored == s
}

// checksums returns the unsigned and signed sums of the block with the
// checksum field taken as eight spaces.
func checksums(b []byte) (unsigned, signed int64) {
	for i, c := range b[:blockSize] {
		if i >= offChksum && i < offChksum+8 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return unsigned, signed
}

// parseNumeric decodes a numeric field: octal digits, optionally surrounded
// by spaces and ended by a NUL or space (libtar and Go both write these), or
// base-256 when the top bit of the first byte is set (GNU/star, Go for large
// values). An empty field is 0.
func parseNumeric(f []byte) (int64, error) {
	if len(f) > 0 && f[0]&0x80 != 0 {
		if f[0]&0x40 != 0 {
			return 0, fmt.Errorf("negative base-256 number")
		}
		var v uint64
		for i, c := range f {
			if i == 0 {
				c &= 0x3f
			}
			if v>>56 != 0 {
				return 0, fmt.Errorf("base-256 number overflows int64")
			}
			v = v<<8 | uint64(c)
		}
		if v > 1<<63-1 {
			return 0, fmt.Errorf("base-256 number overflows int64")
		}
		return int64(v), nil
	}
	s := bytes.TrimLeft(f, " \x00")
	if i := bytes.IndexAny(s, " \x00"); i >= 0 {
		if len(bytes.Trim(s[i:], " \x00")) != 0 {
			return 0, fmt.Errorf("garbage after octal number %q", f)
		}
		s = s[:i]
	}
	if len(s) == 0 {
		return 0, nil
	}
	v, err := strconv.ParseInt(string(s), 8, 64)
	if err != nil {
		return 0, fmt.Errorf("bad octal number %q", f)
	}
	return v, nil
}

// paxSize returns the value of the "size" record in PAX data, ok=false when
// there is none.
func paxSize(data []byte) (size int64, ok bool, err error) {
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 {
			return 0, false, fmt.Errorf("PAX record without a length")
		}
		n, perr := strconv.Atoi(string(data[:sp]))
		if perr != nil || n <= sp+1 || n > len(data) || data[n-1] != '\n' {
			return 0, false, fmt.Errorf("malformed PAX record %q", data[:min(len(data), 40)])
		}
		kv := data[sp+1 : n-1]
		data = data[n:]
		eq := bytes.IndexByte(kv, '=')
		if eq < 0 {
			return 0, false, fmt.Errorf("PAX record %q without '='", kv)
		}
		if string(kv[:eq]) == "size" {
			v, perr := strconv.ParseInt(string(kv[eq+1:]), 10, 64)
			if perr != nil || v < 0 {
				return 0, false, fmt.Errorf("bad PAX size %q", kv[eq+1:])
			}
			size, ok = v, true // the last record wins, as in tar
		}
	}
	return size, ok, nil
}

// Peel returns the member of a tar-wrapped layer blob of size bytes in r, and
// wrapped=true; or, when r is not a tar (first block not a ustar header with
// version "00" and a valid checksum), the whole of r and wrapped=false. It
// follows overlaybd's reader: with a PAX header ('x') the data is at 1536 and
// its size is the PAX "size" record (else the size field of the ustar header
// at 1024); without one, the data is at 512 with the ustar size. Trailing
// bytes after the member are ignored.
func Peel(r io.ReaderAt, size int64) (member *io.SectionReader, wrapped bool, err error) {
	whole := io.NewSectionReader(r, 0, size)
	if size < blockSize {
		return whole, false, nil
	}
	var b [blockSize]byte
	if err := readFull(r, b[:], 0); err != nil {
		return nil, false, fmt.Errorf("tarwrap: reading first block: %w", err)
	}
	if !isHeader(b[:]) {
		return whole, false, nil
	}
	ferr := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
	}
	dataOff := int64(USTARDataOffset)
	var msize int64
	if b[offTypeflag] == 'x' {
		dataOff = PAXDataOffset
		plen, err := parseNumeric(b[offSize : offSize+12])
		if err != nil {
			return nil, false, ferr("PAX header size field: %v", err)
		}
		if plen > blockSize {
			// overlaybd assumes the data at 1536, so longer PAX data cannot
			// be what it wrote and would be misread by it.
			return nil, false, ferr("PAX data of %d bytes does not fit in one block", plen)
		}
		if size < PAXDataOffset {
			return nil, false, ferr("file of %d bytes ends inside the PAX form (needs %d)", size, PAXDataOffset)
		}
		var pd [2 * blockSize]byte
		if err := readFull(r, pd[:], blockSize); err != nil {
			return nil, false, fmt.Errorf("tarwrap: reading PAX data: %w", err)
		}
		v, ok, err := paxSize(pd[:plen])
		if err != nil {
			return nil, false, ferr("PAX data: %v", err)
		}
		h := pd[blockSize:]
		if !isHeader(h) {
			return nil, false, ferr("no valid ustar header at offset %d after the PAX header", 2*blockSize)
		}
		if ok {
			msize = v
		} else if msize, err = parseNumeric(h[offSize : offSize+12]); err != nil {
			return nil, false, ferr("size field of the header at offset %d: %v", 2*blockSize, err)
		}
	} else if msize, err = parseNumeric(b[offSize : offSize+12]); err != nil {
		return nil, false, ferr("size field: %v", err)
	}
	if msize < 0 || msize > size-dataOff {
		return nil, false, ferr("member of %d bytes at offset %d does not fit in the %d-byte file", msize, dataOff, size)
	}
	return io.NewSectionReader(r, dataOff, msize), true, nil
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Header returns the 1536 bytes overlaybd-commit -t writes before a member of
// size bytes (docs/format-tar.md §2, tar_file.cpp write_header_trailer): a PAX header named
// overlaybd.pax holding the record "<len> size=<size>\n", then a ustar header
// overlaybd.commit with size field 0, owner root:root (0:0), mtime 0 and the
// given mode. mode may be a Go file mode (permission bits, regular file) or a
// raw st_mode such as 0100644.
func Header(size int64, mode fs.FileMode) []byte {
	buf := make([]byte, PAXDataOffset)
	rec := paxRecord("size", strconv.FormatInt(size, 10))

	pax := buf[:blockSize]
	pax[offTypeflag] = 'x'
	copy(pax[offName:], "overlaybd.pax")
	octalNoNUL(pax[offSize:offSize+12], int64(len(rec)))
	copy(pax[offVersion:], "00")
	copy(pax[offMagic:], "ustar\x00")
	setChecksum(pax)
	copy(buf[blockSize:], rec)

	h := buf[2*blockSize:]
	h[offTypeflag] = '0'
	copy(h[offUname:offUname+32], "root")
	octal(h[offUID:offUID+8], 0)
	copy(h[offGname:offGname+32], "root")
	octal(h[offGID:offGID+8], 0)
	octal(h[offMode:offMode+8], stMode(mode))
	octalNoNUL(h[offMtime:offMtime+12], 0)
	octalNoNUL(h[offSize:offSize+12], 0)
	copy(h[offName:], "overlaybd.commit")
	copy(h[offVersion:], "00")
	copy(h[offMagic:], "ustar\x00")
	setChecksum(h)
	return buf
}

// Trailer returns what follows a member of size bytes: zero padding to a
// multiple of 512, then the two zero blocks that end a tar archive.
func Trailer(size int64) []byte {
	pad := (blockSize - size%blockSize) % blockSize
	return make([]byte, pad+2*blockSize)
}

// WrappedSize is the size of the blob Header+member+Trailer.
func WrappedSize(size int64) int64 {
	return PAXDataOffset + size + int64(len(Trailer(size)))
}

// paxRecord formats "<len> key=value\n" where len counts the whole record,
// its own digits included.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	n += len(strconv.Itoa(n))
	if r := strconv.Itoa(n) + " " + k + "=" + v + "\n"; len(r) == n {
		return r
	}
	n++ // the length gained a digit
	return strconv.Itoa(n) + " " + k + "=" + v + "\n"
}

// octal writes libtar's int_to_oct: right-aligned octal in len-2 columns, a
// space and a NUL.
func octal(f []byte, v int64) {
	s := fmt.Sprintf("%*o ", len(f)-2, v)
	copy(f, s)
	f[len(f)-1] = 0
}

// octalNoNUL writes libtar's int_to_oct_nonull: right-aligned octal in len-1
// columns and a space instead of the NUL.
func octalNoNUL(f []byte, v int64) {
	s := fmt.Sprintf("%*o", len(f)-1, v)
	copy(f, s)
	f[len(f)-1] = ' '
}

func setChecksum(h []byte) {
	u, _ := checksums(h)
	octal(h[offChksum:offChksum+8], u)
}

func stMode(m fs.FileMode) int64 {
	const sIFMT, sIFREG = 0o170000, 0o100000
	if raw := int64(m) & 0o7777777; m&fs.ModeType == 0 && raw&sIFMT != 0 {
		return raw & 0o177777 // already an st_mode
	}
	v := int64(m.Perm()) | sIFREG
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}
