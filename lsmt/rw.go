package lsmt

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/internal/filelock"
	"github.com/obdfs/obdfs/internal/regfile"
)

// CreateOptions configures a new writable layer.
type CreateOptions struct {
	VirtualSize int64  // bytes; 0 = inherit from the lowers when stacked
	UUID        string // "" = random v4
	ParentUUID  string // "" = null
	// Sparse makes a sparse layer (overlaybd-create -s, docs/format-lsmt.md §6.4): the
	// data file holds sector s at byte 4096+s×512 and no index is kept.
	Sparse bool
}

// RWFile is a writable layer, in one of overlaybd's two forms:
//
//   - append-only (docs/format-lsmt.md §6.1): a data file (header, then every write's
//     payload appended) and an index file (header, then a log of one record
//     per write or discard);
//   - sparse (docs/format-lsmt.md §6.4, [RWFile.Sparse]): only a data file, header flags
//     0x13, virtual sector s stored at byte 4096+s×512; the index is rebuilt
//     from the file's allocated extents on open. See sparse.go.
//
// WriteAt and Discard are serialized; ReadAt may run concurrently with them
// and with each other.
type RWFile struct {
	dataPath, indexPath string
	data, index         *os.File // index is nil for a sparse layer
	sparse              bool
	readOnly            bool // opened by OpenReadOnly: nothing is ever written

	mu       sync.Mutex // append position; held by WriteAt, Discard, Sync
	dataEnd  int64      // bytes; next data append position
	indexEnd int64      // bytes; next record position

	imu    sync.RWMutex // idx and closed
	idx    *memIndex
	closed bool

	hdr   Header       // index file header (authoritative vsize/uuid); data file header if sparse
	vsize atomic.Int64 // bytes

	reads, bytes atomic.Int64 // data reads, for Reads
}

// Create makes a new writable layer: both files are created exclusively
// with mode 0644 and get their headers.
func Create(dataPath, indexPath string, o CreateOptions) (*RWFile, error) {
	if o.VirtualSize < 0 || o.VirtualSize%SectorSize != 0 || o.VirtualSize > MaxVirtualSize {
		return nil, fmt.Errorf("lsmt %s: virtual size %d: %w", dataPath, o.VirtualSize, ErrAlignment)
	}
	u := o.UUID
	if u == "" {
		u = newUUID()
	}
	dh := newHeader(FlagHeader | FlagData)
	if o.Sparse {
		dh.Flags |= FlagSparse
	}
	dh.VirtualSize = uint64(o.VirtualSize)
	if err := dh.SetUUID(u); err != nil {
		return nil, err
	}
	if err := dh.SetParentUUID(o.ParentUUID); err != nil {
		return nil, err
	}
	if o.Sparse {
		return createSparse(dataPath, indexPath, &dh)
	}
	ih := dh
	ih.Flags = FlagHeader
	ih.IndexOffset = HeaderSize
	df, err := createWith(dataPath, &dh)
	if err != nil {
		return nil, err
	}
	xf, err := createWith(indexPath, &ih)
	if err != nil {
		df.Close()
		os.Remove(dataPath)
		return nil, err
	}
	f := &RWFile{dataPath: dataPath, indexPath: indexPath, data: df, index: xf,
		dataEnd: HeaderSize, indexEnd: HeaderSize, idx: newMemIndex(), hdr: ih}
	f.vsize.Store(o.VirtualSize)
	return f, nil
}

func createWith(path string, h *Header) (*os.File, error) {
	b, err := h.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	// Held like OpenRW's: the new layer's creator is its writer.
	if err := modeWrite.lock(f); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("lsmt %s: writing header: %w", path, err)
	}
	return f, nil
}

// OpenRW opens a writable layer for writing and replays its index log
// (last writer wins).
//
// One writer at a time: the data and index files are locked exclusively
// (flock, see internal/filelock) for as long as the RWFile is open, so a
// second OpenRW of the same files (another daemon, the same daemon, a
// commit) fails with an error wrapping filelock.ErrLocked that names the
// holder's pid and command line where /proc/locks tells.
//
// A crash can leave a torn tail: a partial trailing record is ignored, and
// trailing records whose data lies past the data file's end (logged, but the
// data never reached the disk) are dropped with a warning; both are cut off
// the index file so later appends don't revive them. That repair happens
// only here, under the lock. A bad record followed by good ones is an error.
//
// A data file whose header has the sparse flag opens as a sparse layer
// (see sparse.go); its index file is then neither needed nor read, as in
// overlaybd's open_file_rw, so indexPath may be empty or name a missing or
// empty file.
func OpenRW(dataPath, indexPath string) (*RWFile, error) {
	return openLayer(dataPath, indexPath, modeWrite)
}

// ReadOnlyOptions configure OpenReadOnly.
type ReadOnlyOptions struct {
	// Quiesced takes a shared lock on the layer's files: the open is
	// refused while a writer holds the layer, and writers are refused
	// while the RWFile is open. Commit uses it, so a committed layer is
	// never a snapshot of a disk in use.
	Quiesced bool
}

// OpenReadOnly opens a writable layer for reading only; it never writes to
// either file. WriteAt, Discard and setVirtualSize fail with
// disk.ErrReadOnly and Sync does nothing.
//
// An append-only layer may be open for writing elsewhere at the same time:
// the view is the prefix of the index log present at open, which is
// consistent because a writer appends a record only after its data. A
// partial trailing record and trailing records whose data is not in the
// data file are left out, in memory only. Later writes are not seen.
//
// A sparse layer is rewritten in place, so no snapshot of it can be taken
// while it is written: its view always holds a shared lock, and is refused
// while a writer holds the layer.
func OpenReadOnly(dataPath, indexPath string, o ReadOnlyOptions) (*RWFile, error) {
	m := modeView
	if o.Quiesced {
		m = modeQuiesced
	}
	return openLayer(dataPath, indexPath, m)
}

// openMode says how a writable layer is opened.
type openMode int

const (
	modeWrite    openMode = iota // read-write, exclusive lock, torn tail repaired
	modeView                     // read-only, no lock (shared for a sparse layer)
	modeQuiesced                 // read-only, shared lock
)

func (m openMode) flag() int {
	if m == modeWrite {
		return os.O_RDWR
	}
	return os.O_RDONLY
}

// lock takes the mode's lock on f; a view takes none.
func (m openMode) lock(f *os.File) error {
	var err error
	switch m {
	case modeWrite:
		err = filelock.Exclusive(f)
	case modeQuiesced:
		err = filelock.Shared(f)
	}
	if err != nil {
		return fmt.Errorf("lsmt: writable layer %w", err)
	}
	return nil
}

func openLayer(dataPath, indexPath string, m openMode) (*RWFile, error) {
	df, err := regfile.Open(dataPath, m.flag())
	if err != nil {
		return nil, err
	}
	if err := m.lock(df); err != nil {
		df.Close()
		return nil, err
	}
	f, err := openRWData(df, dataPath, indexPath, m)
	if err != nil {
		df.Close()
		return nil, err
	}
	return f, nil
}

func openRWData(df *os.File, dataPath, indexPath string, m openMode) (*RWFile, error) {
	dh, dsize, err := readFileHeader(df, dataPath)
	if err != nil {
		return nil, err
	}
	if !dh.IsHeader() || !dh.IsData() {
		return nil, formatErr(dataPath, 0, "header.flags", "flags %#x: want header and data-file bits", dh.Flags)
	}
	if dh.IsSealed() {
		return nil, formatErr(dataPath, 0, "header.flags", "flags %#x: a sealed layer is read-only", dh.Flags)
	}
	if dh.IsSparse() {
		if m == modeView {
			// Written in place: only a layer nobody writes has a
			// consistent view. Read the header again under the lock.
			if err := modeQuiesced.lock(df); err != nil {
				return nil, err
			}
			if dh, dsize, err = readFileHeader(df, dataPath); err != nil {
				return nil, err
			}
		}
		return openSparse(df, dataPath, indexPath, dh, dsize, m)
	}
	xf, err := regfile.Open(indexPath, m.flag())
	if err != nil {
		return nil, err
	}
	if err := m.lock(xf); err != nil {
		xf.Close()
		return nil, err
	}
	f, err := openRW(df, xf, dataPath, indexPath, dsize, m)
	if err != nil {
		xf.Close()
		return nil, err
	}
	return f, nil
}

func openRW(df, xf *os.File, dataPath, indexPath string, dsize int64, m openMode) (*RWFile, error) {
	ih, isize, err := readFileHeader(xf, indexPath)
	if err != nil {
		return nil, err
	}
	if !ih.IsHeader() || ih.IsData() || ih.IsSealed() {
		return nil, formatErr(indexPath, 0, "header.flags", "flags %#x: want an unsealed index-file header", ih.Flags)
	}
	if err := checkVirtualSize(indexPath, 0, "header", ih.VirtualSize); err != nil {
		return nil, err
	}
	if ih.IndexOffset != HeaderSize {
		return nil, formatErr(indexPath, 0, "header.index_offset", "%d, want %d", ih.IndexOffset, HeaderSize)
	}
	if m == modeView {
		// A writer may be appending: take the data size after the index
		// size, so every record of the prefix has its data below it.
		st, err := df.Stat()
		if err != nil {
			return nil, err
		}
		dsize = st.Size()
	}
	count := (isize - HeaderSize) / RecordSize
	if count > MaxIndexSize {
		e := formatErr(indexPath, 0, "size", "%d records, at most %d", count, MaxIndexSize)
		e.Err = ErrIndexTooLarge
		return nil, e
	}
	hi := uint64(dsize) / SectorSize
	idx := newMemIndex()
	const chunk = 4096 // records per read
	buf := make([]byte, min(count, chunk)*RecordSize)
	good := int64(0) // records up to the last good one
	var firstBad int64 = -1
	var badRec Record
	for i := int64(0); i < count; i += chunk {
		n := min(count-i, chunk)
		b := buf[:n*RecordSize]
		if k, err := xf.ReadAt(b, HeaderSize+i*RecordSize); k < len(b) {
			if m == modeView && (err == nil || errors.Is(err, io.EOF)) {
				// A writer cut a torn tail since the size was taken:
				// the prefix ends with the whole records read.
				n = int64(k) / RecordSize
				count = i + n
			} else {
				if err == nil || errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("lsmt %s: reading index log: %w", indexPath, err)
			}
		}
		for j := int64(0); j < n; j++ {
			r := DecodeRecord(b[j*RecordSize:])
			if r.invalid() {
				continue // group-commit padding
			}
			r.Tag = 0
			if firstBad >= 0 {
				if pastEnd(r, hi) {
					continue
				}
				return nil, formatErr(indexPath, HeaderSize+firstBad*RecordSize, fmt.Sprintf("index[%d]", firstBad),
					"record %v points past the data file end (%d sectors) but later records are valid", badRec, hi)
			}
			if !r.verifyMOffset(dataStart, hi) {
				if r.MOffset >= dataStart && pastEnd(r, hi) {
					firstBad, badRec = i+j, r
					continue
				}
				return nil, formatErr(indexPath, HeaderSize+(i+j)*RecordSize, fmt.Sprintf("index[%d]", i+j),
					"record %v maps outside the data area [%d, %d] sectors of %s", r, dataStart, hi, dataPath)
			}
			if r.End() > InvalidOffset {
				return nil, formatErr(indexPath, HeaderSize+(i+j)*RecordSize, fmt.Sprintf("index[%d]", i+j), "record %v reaches past the address space", r)
			}
			idx.Insert(r)
			good = i + j + 1
		}
	}
	idx.Compact() // the replay left blocks half full
	if firstBad >= 0 {
		if m == modeWrite {
			slog.Warn("lsmt: dropping index records past the data end (unsynced writes before a crash)",
				"index", indexPath, "first", firstBad, "records", count-firstBad, "data_sectors", hi)
		}
		good = firstBad
	} else {
		good = count // keep trailing padding records
	}
	indexEnd := HeaderSize + good*RecordSize
	dataEnd := (dsize + SectorSize - 1) / SectorSize * SectorSize
	if m == modeWrite {
		if indexEnd != isize {
			if err := xf.Truncate(indexEnd); err != nil {
				return nil, fmt.Errorf("lsmt %s: cutting torn tail: %w", indexPath, err)
			}
		}
		if dataEnd != dsize {
			if err := df.Truncate(dataEnd); err != nil {
				return nil, fmt.Errorf("lsmt %s: aligning data end: %w", dataPath, err)
			}
		}
	}
	f := &RWFile{dataPath: dataPath, indexPath: indexPath, data: df, index: xf, readOnly: m != modeWrite,
		dataEnd: dataEnd, indexEnd: indexEnd, idx: idx, hdr: ih}
	f.vsize.Store(int64(ih.VirtualSize))
	return f, nil
}

// pastEnd reports whether r lies (partly) beyond hi sectors of data.
func pastEnd(r Record, hi uint64) bool {
	if r.Zeroed {
		return r.MOffset > hi
	}
	return r.MOffset+r.Length > hi
}

func readFileHeader(f *os.File, name string) (Header, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return Header{}, 0, err
	}
	if st.Size() < HeaderSize {
		return Header{}, 0, formatErr(name, 0, "size", "file is %d bytes, shorter than its header", st.Size())
	}
	var b [HeaderSize]byte
	if err := readFull(f, b[:], 0); err != nil {
		return Header{}, 0, fmt.Errorf("lsmt %s: reading header: %w", name, err)
	}
	h, _ := ParseHeader(b[:])
	if !h.MagicOK() {
		return h, 0, formatErr(name, 0, "header.magic", "bad magic % x", b[:24])
	}
	return h, st.Size(), nil
}

// DataPath and IndexPath name the two files.
func (f *RWFile) DataPath() string  { return f.dataPath }
func (f *RWFile) IndexPath() string { return f.indexPath }

// Header returns the index file's header (a sparse layer's data file
// header).
func (f *RWFile) Header() Header {
	f.imu.RLock()
	defer f.imu.RUnlock()
	return f.hdr
}

// VirtualSize is the persisted virtual size (0 = inherit).
func (f *RWFile) VirtualSize() int64 { return f.vsize.Load() }

// Size is VirtualSize.
func (f *RWFile) Size() int64 { return f.VirtualSize() }

// UUID and ParentUUID come from the index file's header (a sparse layer's
// data file header).
func (f *RWFile) UUID() string       { h := f.Header(); return h.UUIDString() }
func (f *RWFile) ParentUUID() string { h := f.Header(); return h.ParentUUIDString() }

// Sparse reports whether this is a sparse layer (docs/format-lsmt.md §6.4).
func (f *RWFile) Sparse() bool { return f.sparse }

// ReadOnly reports whether the layer was opened with OpenReadOnly.
func (f *RWFile) ReadOnly() bool { return f.readOnly }

// errReadOnly is what changing a layer opened with OpenReadOnly returns.
func (f *RWFile) errReadOnly(op string) error {
	return fmt.Errorf("lsmt %s: %s: %w (opened read-only)", f.dataPath, op, disk.ErrReadOnly)
}

// inheritSize gives a read-only view of a size-0 layer its stack's size,
// in memory only (a writer persists it with setVirtualSize).
func (f *RWFile) inheritSize(vs int64) {
	f.imu.Lock()
	f.hdr.VirtualSize = uint64(vs)
	f.imu.Unlock()
	f.vsize.Store(vs)
}

// setVirtualSize rewrites the virtual size in both headers (overlaybd
// update_vsize), e.g. when a layer created with size 0 is stacked. A sparse
// layer has only the data file's header; its data file is resized to
// 4096+vs, and it cannot shrink.
func (f *RWFile) setVirtualSize(vs int64) error {
	if vs < 0 || vs%SectorSize != 0 || vs > MaxVirtualSize {
		return fmt.Errorf("lsmt %s: virtual size %d: %w", f.dataPath, vs, ErrAlignment)
	}
	if f.readOnly {
		return f.errReadOnly("setting the virtual size")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sparse {
		return f.setSparseSizeLocked(vs)
	}
	for _, x := range []struct {
		f    *os.File
		name string
	}{{f.data, f.dataPath}, {f.index, f.indexPath}} {
		h, _, err := readFileHeader(x.f, x.name)
		if err != nil {
			return err
		}
		h.VirtualSize = uint64(vs)
		b, _ := h.MarshalBinary()
		if _, err := x.f.WriteAt(b, 0); err != nil {
			return fmt.Errorf("lsmt %s: rewriting header: %w", x.name, err)
		}
	}
	f.imu.Lock()
	f.hdr.VirtualSize = uint64(vs)
	f.imu.Unlock()
	f.vsize.Store(vs)
	return nil
}

func checkAligned(off, n int64) error {
	if off < 0 || off%SectorSize != 0 || n%SectorSize != 0 {
		return fmt.Errorf("%w: offset %d, length %d", ErrAlignment, off, n)
	}
	if uint64(off+n)/SectorSize > MaxOffset {
		return fmt.Errorf("%w: [%d, +%d)", ErrOutOfRange, off, n)
	}
	return nil
}

// WriteAt appends p as the data of virtual bytes [off, off+len(p)); both
// must be 512-aligned. Like overlaybd, writes are split at MaxIOSize, each
// piece one record.
func (f *RWFile) WriteAt(p []byte, off int64) (int, error) {
	if err := checkAligned(off, int64(len(p))); err != nil {
		return 0, fmt.Errorf("lsmt %s: write: %w", f.dataPath, err)
	}
	if f.readOnly {
		return 0, f.errReadOnly("write")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sparse {
		if err := f.checkSparseRange(off, int64(len(p))); err != nil {
			return 0, fmt.Errorf("lsmt %s: write: %w", f.dataPath, err)
		}
	}
	n := 0
	for len(p) > 0 {
		c := min(len(p), MaxIOSize)
		put := f.appendLocked
		if f.sparse {
			put = f.writeSparseLocked
		}
		if err := put(p[:c], off); err != nil {
			return n, err
		}
		n += c
		p, off = p[c:], off+int64(c)
	}
	return n, nil
}

func (f *RWFile) appendLocked(p []byte, off int64) error {
	if f.isClosed() {
		return ErrClosed
	}
	if _, err := f.data.WriteAt(p, f.dataEnd); err != nil {
		return fmt.Errorf("lsmt %s: appending data: %w", f.dataPath, err)
	}
	r := Record{Offset: uint64(off) / SectorSize, Length: uint64(len(p)) / SectorSize, MOffset: uint64(f.dataEnd) / SectorSize}
	f.dataEnd += int64(len(p))
	return f.logLocked(r)
}

// logLocked appends r to the index log, then makes it visible to readers.
func (f *RWFile) logLocked(r Record) error {
	var b [RecordSize]byte
	r.Encode(b[:])
	if _, err := f.index.WriteAt(b[:], f.indexEnd); err != nil {
		f.index.Truncate(f.indexEnd) // don't leave a partial record
		return fmt.Errorf("lsmt %s: appending record: %w", f.indexPath, err)
	}
	f.indexEnd += RecordSize
	f.imu.Lock()
	f.idx.Insert(r)
	f.imu.Unlock()
	return nil
}

// Discard makes [off, off+length) read as zeros (and hide lower layers):
// zeroed records of at most MaxLength sectors, moffset = data end.
func (f *RWFile) Discard(off, length int64) error {
	if err := checkAligned(off, length); err != nil {
		return fmt.Errorf("lsmt %s: discard: %w", f.dataPath, err)
	}
	if f.readOnly {
		return f.errReadOnly("discard")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sparse {
		return f.discardSparseLocked(off, length)
	}
	for length > 0 {
		if f.isClosed() {
			return ErrClosed
		}
		c := min(length, MaxLength*SectorSize)
		r := Record{Offset: uint64(off) / SectorSize, Length: uint64(c) / SectorSize, MOffset: uint64(f.dataEnd) / SectorSize, Zeroed: true}
		if err := f.logLocked(r); err != nil {
			return err
		}
		off, length = off+c, length-c
	}
	return nil
}

// Sync makes every acknowledged write and discard durable: the data file is
// synced before the index, so a synced record never points at lost data. A
// sparse layer has only the data file. A read-only layer has nothing to
// sync.
func (f *RWFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isClosed() {
		return ErrClosed
	}
	if f.readOnly {
		return nil
	}
	if err := f.data.Sync(); err != nil {
		return fmt.Errorf("lsmt %s: sync: %w", f.dataPath, err)
	}
	if f.index == nil {
		return nil
	}
	if err := f.index.Sync(); err != nil {
		return fmt.Errorf("lsmt %s: sync: %w", f.indexPath, err)
	}
	return nil
}

// Close closes both files (without syncing; call Sync first for durability).
func (f *RWFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.imu.Lock()
	if f.closed {
		f.imu.Unlock()
		return nil
	}
	f.closed = true
	f.imu.Unlock()
	if f.index == nil {
		return f.data.Close()
	}
	return errors.Join(f.data.Close(), f.index.Close())
}

func (f *RWFile) isClosed() bool {
	f.imu.RLock()
	defer f.imu.RUnlock()
	return f.closed
}

// lookup appends the layer's records intersecting the sector range, trimmed.
func (f *RWFile) lookup(dst []Record, sector, n uint64) ([]Record, error) {
	f.imu.RLock()
	defer f.imu.RUnlock()
	if f.closed {
		return dst, ErrClosed
	}
	return f.idx.Lookup(dst, sector, n), nil
}

// Index returns the current records in order (a snapshot).
func (f *RWFile) Index() []Record {
	f.imu.RLock()
	defer f.imu.RUnlock()
	return f.idx.Records()
}

// Reads reports the data-file reads made since the layer was opened and the
// bytes they asked for (for `obdfs stats`).
func (f *RWFile) Reads() (calls, bytes int64) { return f.reads.Load(), f.bytes.Load() }

func (f *RWFile) readData(p []byte, moffset uint64) error {
	f.reads.Add(1)
	f.bytes.Add(int64(len(p)))
	if err := readFull(f.data, p, int64(moffset*SectorSize)); err != nil {
		return fmt.Errorf("lsmt %s: reading %d bytes at %d: %w", f.dataPath, len(p), moffset*SectorSize, err)
	}
	return nil
}

// ReadAt reads the layer alone as a disk: unwritten sectors read as zeros.
// Any offset/length; reads past VirtualSize are short with io.EOF.
func (f *RWFile) ReadAt(p []byte, off int64) (int, error) {
	return readAny(f, p, off, f.VirtualSize())
}

func (f *RWFile) readSectors(p []byte, sector uint64) error {
	bp := segPool.Get().(*[]Record)
	defer segPool.Put(bp)
	segs, err := f.lookup((*bp)[:0], sector, uint64(len(p)/SectorSize))
	*bp = segs[:0]
	if err != nil {
		return err
	}
	pos := sector
	for _, r := range segs {
		clear(p[(pos-sector)*SectorSize : (r.Offset-sector)*SectorSize])
		q := p[(r.Offset-sector)*SectorSize : (r.End()-sector)*SectorSize]
		if r.Zeroed {
			clear(q)
		} else if err := f.readData(q, r.MOffset); err != nil {
			return err
		}
		pos = r.End()
	}
	clear(p[(pos-sector)*SectorSize:])
	return nil
}

var _ io.ReaderAt = (*RWFile)(nil)
