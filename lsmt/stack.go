package lsmt

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/obdfs/obdfs/disk"
)

// segPool holds record buffers for lookups, so reads allocate nothing.
var segPool = sync.Pool{New: func() any { s := make([]Record, 0, 64); return &s }}

// sectorPool holds one-sector buffers for unaligned edges.
var sectorPool = sync.Pool{New: func() any { return new([SectorSize]byte) }}

// sectorReader reads whole sectors: len(p) is a multiple of SectorSize.
type sectorReader interface {
	readSectors(p []byte, sector uint64) error
}

// readAny serves an io.ReaderAt request at any offset and length over a
// sector reader of the given size: unaligned edges go through a pooled
// sector, reads past size are short with io.EOF.
func readAny(sr sectorReader, p []byte, off, size int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrOutOfRange, off)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p = p[:size-off]
		eof = io.EOF
	}
	n := len(p)
	q := p
	if head := off % SectorSize; head != 0 || len(q) < SectorSize {
		buf := sectorPool.Get().(*[SectorSize]byte)
		err := sr.readSectors(buf[:], uint64(off/SectorSize))
		c := copy(q, buf[head:])
		sectorPool.Put(buf)
		if err != nil {
			return 0, err
		}
		q = q[c:]
		off += int64(c)
	}
	if mid := len(q) / SectorSize * SectorSize; mid > 0 {
		if err := sr.readSectors(q[:mid], uint64(off/SectorSize)); err != nil {
			return n - len(q), err
		}
		q = q[mid:]
		off += int64(mid)
	}
	if len(q) > 0 {
		buf := sectorPool.Get().(*[SectorSize]byte)
		err := sr.readSectors(buf[:], uint64(off/SectorSize))
		copy(q, buf[:])
		sectorPool.Put(buf)
		if err != nil {
			return n - len(q), err
		}
	}
	return n, eof
}

// view is a read-only merged view: idx records' tags select files.
type view struct {
	idx   *sortedIndex
	files []*File // by tag
}

func (v *view) readSectors(p []byte, sector uint64) error {
	n := uint64(len(p) / SectorSize)
	bp := segPool.Get().(*[]Record)
	segs := v.idx.Lookup((*bp)[:0], sector, n)
	err := v.fill(p, sector, segs)
	*bp = segs[:0]
	segPool.Put(bp)
	return err
}

// fill reads the sectors [sector, sector+len(p)/512) given the trimmed
// records that intersect them; gaps read as zeros.
func (v *view) fill(p []byte, sector uint64, segs []Record) error {
	pos := sector
	for _, r := range segs {
		if r.Offset > pos {
			clear(p[(pos-sector)*SectorSize : (r.Offset-sector)*SectorSize])
		}
		q := p[(r.Offset-sector)*SectorSize : (r.End()-sector)*SectorSize]
		if r.Zeroed {
			clear(q)
		} else if err := v.files[r.Tag].readData(q, r.MOffset); err != nil {
			return err
		}
		pos = r.End()
	}
	if end := sector + uint64(len(p)/SectorSize); pos < end {
		clear(p[(pos-sector)*SectorSize:])
	}
	return nil
}

// Stack is the merged view of read-only layers and an optional writable
// upper layer (docs/format-lsmt.md §7). It implements disk.Disk. Reads are concurrent
// and lock-free on the read-only part (the merged index is immutable);
// the upper layer has its own lock.
type Stack struct {
	lowers []*File // bottom first
	upper  *RWFile
	lower  view // merged read-only view
	size   int64
	wmu    sync.Mutex // serializes read-modify-write of partial sectors
}

var _ disk.Disk = (*Stack)(nil)

// NewStack stacks lowers (bottom first, at most MaxLayers) and upper (may be
// nil). The virtual size is that of the top-most layer with a non-zero size;
// an upper with size 0 inherits the lowers' size, which is written into both
// of its headers like overlaybd does. The parent chain is not checked (as in
// overlaybd's image loader); call VerifyOrder for that. The Stack owns the
// layers: Close closes them.
func NewStack(lowers []*File, upper *RWFile) (*Stack, error) {
	if len(lowers) > MaxLayers {
		return nil, fmt.Errorf("%w: %d read-only layers, at most %d", ErrTooManyLayers, len(lowers), MaxLayers)
	}
	idxs := make([]*sortedIndex, len(lowers))
	files := make([]*File, len(lowers))
	for i, f := range lowers {
		idxs[i] = f.index
		files[len(lowers)-1-i] = f // tag = position from the top
	}
	m, err := mergeIndexes(idxs)
	if err != nil {
		return nil, err
	}
	s := &Stack{lowers: lowers, upper: upper, lower: view{idx: m, files: files}}
	for i := len(lowers) - 1; i >= 0; i-- {
		if vs := lowers[i].VirtualSize(); vs != 0 {
			s.size = vs
			break
		}
	}
	if upper != nil {
		if vs := upper.VirtualSize(); vs != 0 {
			s.size = vs
		} else if s.size != 0 && upper.ReadOnly() {
			upper.inheritSize(s.size)
		} else if s.size != 0 {
			if err := upper.setVirtualSize(s.size); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// VerifyOrder checks the uuid chain of lowers (bottom first): each layer's
// parent_uuid must equal the uuid of the layer below it where both are set.
func VerifyOrder(lowers []*File) error {
	for i := 1; i < len(lowers); i++ {
		below, f := lowers[i-1], lowers[i]
		p, u := f.ParentUUID(), below.UUID()
		if IsNullUUID(p) || IsNullUUID(u) {
			continue
		}
		// uuid strings may be stored in either case (docs/format-lsmt.md §2.3).
		if !strings.EqualFold(p, u) {
			return fmt.Errorf("%w: %s has parent uuid %s but the layer below it, %s, has uuid %s", ErrOrder, f.name, p, below.name, u)
		}
	}
	return nil
}

// Size is the virtual size in bytes.
func (s *Stack) Size() int64 { return s.size }

// ReadOnly reports whether the stack has no upper layer open for writing.
func (s *Stack) ReadOnly() bool { return s.upper == nil || s.upper.ReadOnly() }

// Lowers returns the read-only layers, bottom first.
func (s *Stack) Lowers() []*File { return s.lowers }

// Upper returns the writable layer or nil.
func (s *Stack) Upper() *RWFile { return s.upper }

// ReadAt reads the merged view at any offset and length.
func (s *Stack) ReadAt(p []byte, off int64) (int, error) {
	if s.upper == nil {
		return readAny(&s.lower, p, off, s.size)
	}
	return readAny(s, p, off, s.size)
}

func (s *Stack) readSectors(p []byte, sector uint64) error {
	bp := segPool.Get().(*[]Record)
	segs, err := s.upper.lookup((*bp)[:0], sector, uint64(len(p)/SectorSize))
	if err == nil {
		err = s.fillUpper(p, sector, segs)
	}
	*bp = segs[:0]
	segPool.Put(bp)
	return err
}

// fillUpper reads the upper's records and fills its gaps from the lowers.
func (s *Stack) fillUpper(p []byte, sector uint64, segs []Record) error {
	pos := sector
	gap := func(a, b uint64) error {
		return s.lower.readSectors(p[(a-sector)*SectorSize:(b-sector)*SectorSize], a)
	}
	for _, r := range segs {
		if r.Offset > pos {
			if err := gap(pos, r.Offset); err != nil {
				return err
			}
		}
		q := p[(r.Offset-sector)*SectorSize : (r.End()-sector)*SectorSize]
		if r.Zeroed {
			clear(q)
		} else if err := s.upper.readData(q, r.MOffset); err != nil {
			return err
		}
		pos = r.End()
	}
	if end := sector + uint64(len(p)/SectorSize); pos < end {
		return gap(pos, end)
	}
	return nil
}

// WriteAt writes to the upper layer; unaligned edges are read, patched and
// written back whole (under a lock, so concurrent edge writes don't race).
func (s *Stack) WriteAt(p []byte, off int64) (int, error) {
	if s.ReadOnly() {
		return 0, disk.ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > s.size {
		return 0, fmt.Errorf("%w: write [%d, +%d) past size %d", ErrOutOfRange, off, len(p), s.size)
	}
	if off%SectorSize == 0 && len(p)%SectorSize == 0 {
		return s.upper.WriteAt(p, off)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n := 0
	if head := off % SectorSize; head != 0 || len(p) < SectorSize {
		c, err := s.patchSector(off-head, head, p)
		if err != nil {
			return 0, err
		}
		n, p, off = c, p[c:], off+int64(c)
	}
	if mid := len(p) / SectorSize * SectorSize; mid > 0 {
		c, err := s.upper.WriteAt(p[:mid], off)
		n += c
		if err != nil {
			return n, err
		}
		p, off = p[mid:], off+int64(mid)
	}
	if len(p) > 0 {
		c, err := s.patchSector(off, 0, p)
		n += c
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// patchSector writes data (nil: zeros) into the sector at sec starting at
// byte at, returning how many bytes of data it consumed.
func (s *Stack) patchSector(sec int64, at int64, data []byte) (int, error) {
	buf := sectorPool.Get().(*[SectorSize]byte)
	defer sectorPool.Put(buf)
	if err := s.readSectors(buf[:], uint64(sec/SectorSize)); err != nil {
		return 0, err
	}
	c := copy(buf[at:], data)
	if _, err := s.upper.WriteAt(buf[:], sec); err != nil {
		return 0, err
	}
	return c, nil
}

// Discard makes [off, off+length) read as zeros: whole sectors become
// zeroed records in the upper layer, partial edge sectors are written with
// zeros.
func (s *Stack) Discard(off, length int64) error {
	if s.ReadOnly() {
		return disk.ErrReadOnly
	}
	if off < 0 || length < 0 || off+length > s.size {
		return fmt.Errorf("%w: discard [%d, +%d) past size %d", ErrOutOfRange, off, length, s.size)
	}
	end := off + length
	a := (off + SectorSize - 1) / SectorSize * SectorSize
	b := end / SectorSize * SectorSize
	if a >= b { // inside one or two partial sectors
		_, err := s.WriteAt(make([]byte, length), off)
		return err
	}
	if a > off {
		if _, err := s.WriteAt(make([]byte, a-off), off); err != nil {
			return err
		}
	}
	if end > b {
		if _, err := s.WriteAt(make([]byte, end-b), b); err != nil {
			return err
		}
	}
	return s.upper.Discard(a, b-a)
}

// Flush makes every acknowledged write durable (fsync of the upper).
func (s *Stack) Flush() error {
	if s.upper == nil {
		return nil
	}
	return s.upper.Sync()
}

// Close closes the upper layer and every lower (a File closes only what Open
// opened; readers given to NewFile stay open).
func (s *Stack) Close() error {
	var errs []error
	if s.upper != nil {
		errs = append(errs, s.upper.Close())
	}
	for _, f := range s.lowers {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
