package lsmt

import (
	"fmt"
	"io"
)

// CommitArgs are overlaybd-commit's --uuid, --parent-uuid and -m.
type CommitArgs struct {
	UUID       string // "" = null uuid (overlaybd clears it unless given)
	ParentUUID string // "" = the source's parent uuid
	Message    string // user tag, at most UserTagSize bytes
}

// CommitSource is a layer (or merged view) that can be committed.
type CommitSource interface {
	// VirtualSize is written into the committed header.
	VirtualSize() int64
	// ParentUUID is used when CommitArgs.ParentUUID is empty.
	ParentUUID() string
	// commitIndex returns the sorted, non-overlapping records to commit.
	commitIndex() ([]Record, error)
	// readRecord reads the data of a (non-zeroed) record from commitIndex.
	readRecord(p []byte, r Record) error
}

var (
	_ CommitSource = (*RWFile)(nil)
	_ CommitSource = (*File)(nil)
	_ CommitSource = (*Stack)(nil)
)

const commitBuf = 1 << 20

// commitPiece is overlaybd's copy step in compact()/pcopy (32 KiB): it copies
// each record in steps of this many sectors, counted from the record's start,
// emits one index entry per step and only then folds neighbours together
// (compress_raw_index, sum of lengths below MaxLength). A long contiguous run
// therefore ends up in records of 255*64 = 16320 sectors; folding whole
// records would give other lengths (14336 for 1 MiB writes), the same
// content in other bytes. Commit follows the same steps.
const commitPiece = 32 << 10 / SectorSize

// Commit writes src as a committed read-only layer (docs/format-lsmt.md §5) to w,
// streaming (no seeks), byte-identical to overlaybd-commit's output for the
// same source. It returns the number of bytes written.
func Commit(w io.Writer, src CommitSource, a CommitArgs) (int64, error) {
	if len(a.Message) > UserTagSize {
		return 0, fmt.Errorf("lsmt: commit message is %d bytes, at most %d", len(a.Message), UserTagSize)
	}
	h := newHeader(FlagHeader | FlagData | FlagSealed)
	h.VirtualSize = uint64(src.VirtualSize())
	if err := h.SetUUID(a.UUID); err != nil {
		return 0, err
	}
	parent := a.ParentUUID
	if parent == "" {
		parent = src.ParentUUID()
	}
	if err := h.SetParentUUID(parent); err != nil {
		return 0, err
	}
	h.SetTag(a.Message)
	recs, err := src.commitIndex()
	if err != nil {
		return 0, err
	}
	cw := &countWriter{w: w}
	hb, _ := h.MarshalBinary()
	if _, err := cw.Write(hb); err != nil {
		return cw.n, err
	}

	out := make([]Record, 0, len(recs))
	buf := make([]byte, commitBuf)
	cursor := uint64(dataStart)
	for _, r := range recs {
		if r.Zeroed {
			m := r
			m.MOffset = cursor
			out = appendCompressed(out, m)
			continue
		}
		for done := uint64(0); done < r.Length; done += commitPiece {
			m := r.trim(r.Offset+done, r.Offset+min(done+commitPiece, r.Length))
			m.MOffset = cursor + done
			out = appendCompressed(out, m)
		}
		// Copy in pieces; a record is at most 8 MiB.
		for done := uint64(0); done < r.Length; {
			n := min(r.Length-done, commitBuf/SectorSize)
			piece := r.trim(r.Offset+done, r.Offset+done+n)
			p := buf[:n*SectorSize]
			if err := src.readRecord(p, piece); err != nil {
				return cw.n, err
			}
			if _, err := cw.Write(p); err != nil {
				return cw.n, err
			}
			done += n
		}
		cursor += r.Length
	}
	for len(out)%(HeaderSize/RecordSize) != 0 {
		out = append(out, invalidRecord)
	}
	ib := make([]byte, len(out)*RecordSize)
	for i, r := range out {
		r.Encode(ib[i*RecordSize:])
	}
	if _, err := cw.Write(ib); err != nil {
		return cw.n, err
	}
	t := h
	t.Flags = FlagData | FlagSealed
	t.IndexOffset = cursor * SectorSize
	t.IndexSize = uint64(len(out))
	tb, _ := t.MarshalBinary()
	_, err = cw.Write(tb)
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// commitIndex returns the layer's current records.
func (f *RWFile) commitIndex() ([]Record, error) {
	f.imu.RLock()
	defer f.imu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	return f.idx.Records(), nil
}

// readRecord reads r's data from the data file.
func (f *RWFile) readRecord(p []byte, r Record) error { return f.readData(p, r.MOffset) }

// commitIndex returns the layer's records (recommitting a sealed layer).
func (f *File) commitIndex() ([]Record, error) {
	return append([]Record(nil), f.index.recs...), nil
}

// readRecord reads r's data from the layer file.
func (f *File) readRecord(p []byte, r Record) error { return f.readData(p, r.MOffset) }

// VirtualSize is the stack's size (for CommitSource).
func (s *Stack) VirtualSize() int64 { return s.size }

// ParentUUID is the bottom layer's parent (flatten keeps the chain below).
func (s *Stack) ParentUUID() string {
	if len(s.lowers) > 0 {
		return s.lowers[0].ParentUUID()
	}
	if s.upper != nil {
		return s.upper.ParentUUID()
	}
	return nullUUID
}

// commitIndex returns the flattened view: the upper's records (tag =
// number of lowers) over the merged lowers (tag = position from the top),
// like overlaybd's combo index. Tags are kept in the committed index, as
// overlaybd's flatten does; readers ignore them.
func (s *Stack) commitIndex() ([]Record, error) {
	low := s.lower.idx.recs
	if s.upper == nil {
		return append([]Record(nil), low...), nil
	}
	up, err := s.upper.commitIndex()
	if err != nil {
		return nil, err
	}
	for i := range up {
		up[i].Tag = uint8(len(s.lowers))
	}
	return fillGaps(up, low), nil
}

// readRecord reads a record of commitIndex from its layer.
func (s *Stack) readRecord(p []byte, r Record) error {
	if s.upper != nil && int(r.Tag) == len(s.lowers) {
		return s.upper.readData(p, r.MOffset)
	}
	return s.lower.files[r.Tag].readData(p, r.MOffset)
}
