package lsmt

import (
	"errors"
	"fmt"
	"github.com/obdfs/obdfs/internal/regfile"
	"io"
	"os"
)

// File is a read-only (committed or sealed) LSMT layer (docs/format-lsmt.md §5).
// Alone it is also a virtual disk: ReadAt reads its own view, holes as zeros.
// It is safe for concurrent use.
type File struct {
	name    string
	r       io.ReaderAt
	size    int64
	header  Header
	trailer Header
	index   *sortedIndex
	closer  io.Closer // set by Open
	view    view      // the file alone as a disk
}

// Open opens the LSMT file at path; Close closes it.
func Open(path string) (*File, error) {
	f, st, err := regfile.OpenStat(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	lf, err := NewFile(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	lf.closer = f
	return lf, nil
}

// NewFile opens the read-only LSMT layer held in r (size bytes), doing every
// check overlaybd does (docs/format-lsmt.md §4). name is used in errors. r is not closed
// by File.Close.
func NewFile(r io.ReaderAt, size int64, name string) (*File, error) {
	f := &File{name: name, r: r, size: size}
	if size < 2*HeaderSize {
		return nil, formatErr(name, 0, "size", "file is %d bytes, shorter than header and trailer (%d)", size, 2*HeaderSize)
	}
	var err error
	if f.header, err = f.readHeader(0, "header"); err != nil {
		return nil, err
	}
	if !f.header.IsHeader() || !f.header.IsData() {
		return nil, formatErr(name, 0, "header.flags", "flags %#x: want header and data-file bits", f.header.Flags)
	}
	toff := size - HeaderSize
	if f.trailer, err = f.readHeader(toff, "trailer"); err != nil {
		return nil, err
	}
	t := &f.trailer
	if t.IsHeader() || !t.IsData() || !t.IsSealed() {
		return nil, formatErr(name, toff, "trailer.flags", "flags %#x: want trailer, data-file and sealed bits", t.Flags)
	}
	if err := checkVirtualSize(name, toff, "trailer", t.VirtualSize); err != nil {
		return nil, err
	}
	if t.IndexSize > MaxROIndexSize {
		e := formatErr(name, toff, "trailer.index_size", "%d records, at most %d", t.IndexSize, MaxROIndexSize)
		e.Err = ErrIndexTooLarge
		return nil, e
	}
	if t.IndexOffset > uint64(toff) || t.IndexSize*RecordSize > uint64(toff)-t.IndexOffset {
		return nil, formatErr(name, toff, "trailer.index_offset", "index [%d, +%d records) does not fit before the trailer at %d", t.IndexOffset, t.IndexSize, toff)
	}
	raw := make([]byte, t.IndexSize*RecordSize)
	if err := readFull(r, raw, int64(t.IndexOffset)); err != nil {
		return nil, fmt.Errorf("lsmt %s: reading index at %d: %w", name, t.IndexOffset, err)
	}
	recs := make([]Record, 0, t.IndexSize)
	hi := t.IndexOffset / SectorSize
	var prevEnd uint64
	for i := range t.IndexSize {
		r := DecodeRecord(raw[i*RecordSize:])
		if r.invalid() {
			continue
		}
		r.Tag = 0 // stored tags are meaningless on normal layers (docs/format-lsmt.md §3.2)
		at := int64(t.IndexOffset + i*RecordSize)
		field := fmt.Sprintf("index[%d]", i)
		if !r.verifyMOffset(dataStart, hi) {
			return nil, formatErr(name, at, field, "record %v maps outside the data area [%d, %d) sectors", r, dataStart, hi)
		}
		if r.Length == 0 {
			continue // maps nothing
		}
		if len(recs) > 0 && r.Offset < prevEnd {
			return nil, formatErr(name, at, field, "record %v overlaps or precedes the previous record (ends at sector %d)", r, prevEnd)
		}
		if r.End() > InvalidOffset {
			return nil, formatErr(name, at, field, "record %v reaches past the address space", r)
		}
		prevEnd = r.End()
		recs = append(recs, r)
	}
	f.index = newIndexSorted(recs)
	f.view = view{idx: f.index, files: []*File{f}}
	return f, nil
}

func (f *File) readHeader(off int64, what string) (Header, error) {
	var b [HeaderSize]byte
	if err := readFull(f.r, b[:], off); err != nil {
		return Header{}, fmt.Errorf("lsmt %s: reading %s at %d: %w", f.name, what, off, err)
	}
	h, err := ParseHeader(b[:])
	if err != nil {
		return h, formatErr(f.name, off, what, "%v", err)
	}
	if !h.MagicOK() {
		return h, formatErr(f.name, off, what+".magic", "bad magic % x", b[:24])
	}
	return h, nil
}

// readFull reads len(p) bytes at off; a short read is io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Name is the name given to NewFile.
func (f *File) Name() string { return f.name }

// Header returns the trailer, whose fields are authoritative (docs/format-lsmt.md §4).
func (f *File) Header() Header { return f.trailer }

// FirstHeader returns the header at offset 0.
func (f *File) FirstHeader() Header { return f.header }

// VirtualSize is the virtual disk size in bytes (from the trailer).
func (f *File) VirtualSize() int64 { return int64(f.trailer.VirtualSize) }

// Size is VirtualSize, so a File is a disk-like io.ReaderAt.
func (f *File) Size() int64 { return f.VirtualSize() }

// UUID is the layer uuid (from the trailer).
func (f *File) UUID() string { return f.trailer.UUIDString() }

// ParentUUID is the parent layer uuid.
func (f *File) ParentUUID() string { return f.trailer.ParentUUIDString() }

// Index returns the layer's records (invalid ones dropped, tags 0). The slice
// must not be modified.
func (f *File) Index() []Record { return f.index.Records() }

// Data returns the raw LSMT byte stream the file was opened on.
func (f *File) Data() io.ReaderAt { return f.r }

// ReadAt reads the layer's own virtual disk: holes and zeroed ranges read as
// zeros; reads past VirtualSize are short with io.EOF. Any offset/length.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return readAny(&f.view, p, off, f.VirtualSize())
}

// Close closes the file if it was opened with Open.
func (f *File) Close() error {
	if f.closer != nil {
		return f.closer.Close()
	}
	return nil
}

// readData reads mapped sectors of the layer file itself.
func (f *File) readData(p []byte, moffset uint64) error {
	if err := readFull(f.r, p, int64(moffset*SectorSize)); err != nil {
		return fmt.Errorf("lsmt %s: reading %d bytes of data at %d: %w", f.name, len(p), moffset*SectorSize, err)
	}
	return nil
}
