package lsmt

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

// Sparse writable layers (docs/format-lsmt.md §6.4, overlaybd-create -s; the
// accelerated-container-image converter makes its writable layers this way).
//
// Only the data file is used: a 4096-byte header with flags 0x13, then the
// virtual disk itself, sector s at byte 4096+s×512, so the file is
// 4096+virtual_size bytes long and mostly holes. No index is persisted:
//
//   - a write is a pwrite at its place plus the record {offset, length,
//     moffset = offset+8} in the in-memory index (split at MaxIOSize like an
//     append-only write, so both kinds commit alike);
//   - a discard punches a hole and, for the running session, inserts a
//     zeroed record (overlaybd LSMTSparseFile::discard does the same);
//   - on open the index is rebuilt from the allocated extents
//     (SEEK_DATA/SEEK_HOLE from byte 4096): each extent [b, e) becomes
//     records {offset (b−4096)/512, moffset b/512} of at most MaxLength
//     sectors.
//
// Consequences, as in overlaybd: after a reopen a discarded range is a hole,
// not a zeroed record, so a lower layer's data shows through it again; and
// extents are as coarse as the host filesystem's allocation unit (4 KiB on
// ext4, xfs and tmpfs), so a 512-byte write makes its whole 4 KiB block
// "written" after a reopen, the other sectors of the block reading as zeros
// and hiding the lowers. A filesystem without hole support (SEEK_DATA
// reporting the whole file as data) makes the whole disk "written".
//
// The index file named next to the data file is created empty by Create
// (as overlaybd-create -s does) and never read or written afterwards.

// createSparse makes the data file with header h (flags 0x13), sized
// 4096+vsize, and an empty index file (when indexPath is not empty).
func createSparse(dataPath, indexPath string, h *Header) (*RWFile, error) {
	df, err := createWith(dataPath, h)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*RWFile, error) {
		df.Close()
		os.Remove(dataPath)
		return nil, err
	}
	if err := df.Truncate(HeaderSize + int64(h.VirtualSize)); err != nil {
		return fail(fmt.Errorf("lsmt %s: sizing sparse data file: %w", dataPath, err))
	}
	if indexPath != "" {
		xf, err := os.OpenFile(indexPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fail(err)
		}
		xf.Close()
	}
	f := &RWFile{dataPath: dataPath, indexPath: indexPath, data: df, sparse: true,
		dataEnd: HeaderSize + int64(h.VirtualSize), idx: newMemIndex(), hdr: *h}
	f.vsize.Store(int64(h.VirtualSize))
	return f, nil
}

// openSparse opens a sparse layer's data file df (header dh, dsize bytes)
// and rebuilds its index from the allocated extents.
//
// A file shorter than 4096+virtual_size (e.g. copied without its trailing
// hole, or created with size 0 and never stacked) is extended to that size:
// the missing tail is a hole either way. A longer file is refused: its tail
// would hold data past the virtual disk (a sealed sparse layer, which has
// its index and trailer there, is read-only and opens with Open).
//
// Opened read-only (m is not modeWrite) nothing is extended: the missing
// tail reads as the hole it would be.
func openSparse(df *os.File, dataPath, indexPath string, dh Header, dsize int64, m openMode) (*RWFile, error) {
	if err := checkVirtualSize(dataPath, 0, "header", dh.VirtualSize); err != nil {
		return nil, err
	}
	want := HeaderSize + int64(dh.VirtualSize)
	if dsize > want {
		return nil, formatErr(dataPath, -1, "size", "sparse data file is %d bytes, longer than header + virtual size (%d); is it a sealed layer?", dsize, want)
	}
	if dsize < want && m == modeWrite {
		slog.Warn("lsmt: extending a short sparse data file to header + virtual size", "data", dataPath, "size", dsize, "want", want)
		if err := df.Truncate(want); err != nil {
			return nil, fmt.Errorf("lsmt %s: extending sparse data file: %w", dataPath, err)
		}
	}
	idx, err := sparseIndex(df, dataPath)
	if err != nil {
		return nil, err
	}
	f := &RWFile{dataPath: dataPath, indexPath: indexPath, data: df, sparse: true, readOnly: m != modeWrite,
		dataEnd: want, idx: idx, hdr: dh}
	f.vsize.Store(int64(dh.VirtualSize))
	return f, nil
}

// sparseIndex maps every allocated extent of df past the header.
func sparseIndex(df *os.File, name string) (*memIndex, error) {
	idx := newMemIndex()
	n := 0
	for pos := int64(HeaderSize); ; {
		b, err := df.Seek(pos, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data at or after pos
		}
		if err != nil {
			return nil, fmt.Errorf("lsmt %s: finding data extents: %w", name, err)
		}
		e, err := df.Seek(b, seekHole)
		if err != nil {
			return nil, fmt.Errorf("lsmt %s: finding data extents: %w", name, err)
		}
		if e <= b {
			return nil, fmt.Errorf("lsmt %s: SEEK_HOLE(%d) = %d went backwards", name, b, e)
		}
		// Sector-align inwards like overlaybd's integer division; only an
		// unaligned file end can make this matter.
		off := uint64(b-HeaderSize+SectorSize-1) / SectorSize
		end := uint64(e-HeaderSize) / SectorSize
		for off < end {
			l := min(end-off, MaxLength)
			if n++; n > MaxIndexSize {
				e := formatErr(name, -1, "extents", "more than %d records of data extents", MaxIndexSize)
				e.Err = ErrIndexTooLarge
				return nil, e
			}
			idx.Insert(Record{Offset: off, Length: l, MOffset: off + dataStart})
			off += l
		}
		pos = e
	}
	idx.Compact()
	return idx, nil
}

// checkSparseRange refuses I/O past the virtual size: the data file is the
// virtual disk, and writing past its end would put data where a later
// setVirtualSize or seal expects nothing.
func (f *RWFile) checkSparseRange(off, n int64) error {
	if vs := f.vsize.Load(); off+n > vs {
		return fmt.Errorf("%w: [%d, +%d) past the sparse layer's virtual size %d", ErrOutOfRange, off, n, vs)
	}
	return nil
}

// writeSparseLocked writes p at its place and maps it; f.mu is held.
func (f *RWFile) writeSparseLocked(p []byte, off int64) error {
	if f.isClosed() {
		return ErrClosed
	}
	if _, err := f.data.WriteAt(p, HeaderSize+off); err != nil {
		return fmt.Errorf("lsmt %s: writing %d bytes at %d: %w", f.dataPath, len(p), HeaderSize+off, err)
	}
	s := uint64(off) / SectorSize
	f.imu.Lock()
	f.idx.Insert(Record{Offset: s, Length: uint64(len(p)) / SectorSize, MOffset: s + dataStart})
	f.imu.Unlock()
	return nil
}

// discardSparseLocked punches [off, off+length) out of the data file and
// maps it as zeroed for this session; f.mu is held.
func (f *RWFile) discardSparseLocked(off, length int64) error {
	if f.isClosed() {
		return ErrClosed
	}
	if err := f.checkSparseRange(off, length); err != nil {
		return fmt.Errorf("lsmt %s: discard: %w", f.dataPath, err)
	}
	if length == 0 {
		return nil
	}
	// Zeroed records first: readers see zeros while the hole is punched.
	f.imu.Lock()
	for o, n := uint64(off)/SectorSize, uint64(length)/SectorSize; n > 0; {
		c := min(n, MaxLength)
		f.idx.Insert(Record{Offset: o, Length: c, MOffset: o + dataStart, Zeroed: true})
		o, n = o+c, n-c
	}
	f.imu.Unlock()
	err := punchHole(f.data, HeaderSize+off, length)
	if errors.Is(err, errors.ErrUnsupported) {
		// Without holes the old data would come back after a reopen.
		err = f.zeroFill(HeaderSize+off, length)
	}
	if err != nil {
		return fmt.Errorf("lsmt %s: discarding [%d, +%d): %w", f.dataPath, off, length, err)
	}
	return nil
}

var zeroBlock [1 << 16]byte

func (f *RWFile) zeroFill(at, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeroBlock)))
		if _, err := f.data.WriteAt(zeroBlock[:c], at); err != nil {
			return err
		}
		at, n = at+c, n-c
	}
	return nil
}

// setSparseSizeLocked is setVirtualSize for a sparse layer; f.mu is held.
func (f *RWFile) setSparseSizeLocked(vs int64) error {
	if f.isClosed() {
		return ErrClosed
	}
	if old := f.vsize.Load(); vs < old {
		return fmt.Errorf("lsmt %s: shrinking a sparse layer from %d to %d bytes is not supported", f.dataPath, old, vs)
	}
	h := f.Header()
	h.VirtualSize = uint64(vs)
	b, _ := h.MarshalBinary()
	if _, err := f.data.WriteAt(b, 0); err != nil {
		return fmt.Errorf("lsmt %s: rewriting header: %w", f.dataPath, err)
	}
	// overlaybd LSMTSparseFile::update_vsize: the file is the disk.
	if err := f.data.Truncate(HeaderSize + vs); err != nil {
		return fmt.Errorf("lsmt %s: resizing sparse data file: %w", f.dataPath, err)
	}
	f.imu.Lock()
	f.hdr.VirtualSize = uint64(vs)
	f.imu.Unlock()
	f.dataEnd = HeaderSize + vs
	f.vsize.Store(vs)
	return nil
}
