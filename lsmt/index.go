package lsmt

import (
	"fmt"
)

// sortedIndex is an immutable, sorted, non-overlapping set of records with a
// read-optimised search structure. It is safe for concurrent use.
//
// A point lookup costs one cache miss to main memory at 1M records, not
// two: the records are also kept packed in their 16-byte on-disk layout,
// in groups of leafSize (256 bytes, 4 cache lines fetched in parallel), and
// the search tree only covers the last end of each group, so it is 16× smaller
// than a tree over every record and its levels stay in the CPU caches. The
// tree's answer names a group; counting inside the group finds the record,
// and the record itself is decoded from the lines just fetched.
type sortedIndex struct {
	recs []Record       // as given; Records and Commit read these
	leaf []packedRecord // recs packed, padded to a multiple of leafSize
	tree stree          // over the last end of each leaf group
	last uint64         // end of the last record
}

// leafSize records of 16 bytes make a 256-byte group: few enough that the
// branch-free count stays cheap, many enough to shrink the tree 16×.
const leafSize = 16

// packedRecord is a Record in its on-disk layout (docs/format-lsmt.md §3.1): w0 holds
// offset (50 bits) and length (14 bits), w1 moffset (55 bits), the zeroed
// bit and the tag. Index records are validated to fit it losslessly.
type packedRecord struct{ w0, w1 uint64 }

func packRecord(r Record) packedRecord {
	w1 := r.MOffset | uint64(r.Tag)<<56
	if r.Zeroed {
		w1 |= 1 << 55
	}
	return packedRecord{r.Offset | r.Length<<50, w1}
}

func (p packedRecord) end() uint64 { return p.w0&(1<<50-1) + p.w0>>50 }

func (p packedRecord) decode(r *Record) {
	r.Offset = p.w0 & (1<<50 - 1)
	r.Length = p.w0 >> 50
	r.MOffset = p.w1 & (1<<55 - 1)
	r.Zeroed = p.w1>>55&1 != 0
	r.Tag = uint8(p.w1 >> 56)
}

// newIndex validates recs (sorted by offset, non-overlapping, lengths within
// MaxLength, mapped sectors within MaxMOffset) and builds the search
// structure. Records of length 0 are dropped. recs is retained; the caller
// must not change it afterwards.
func newIndex(recs []Record) (*sortedIndex, error) {
	out := recs[:0]
	var prevEnd uint64
	for i, r := range recs {
		if r.Length == 0 {
			continue
		}
		if r.Length > MaxLength || r.Offset >= InvalidOffset || r.End() > InvalidOffset ||
			r.MOffset > MaxMOffset || r.mEnd() > MaxMOffset+1 {
			return nil, fmt.Errorf("%w: record %d %v out of range", ErrFormat, i, r)
		}
		if len(out) > 0 && r.Offset < prevEnd {
			return nil, fmt.Errorf("%w: record %d %v overlaps or precedes the previous one (ends at %d)", ErrFormat, i, r, prevEnd)
		}
		prevEnd = r.End()
		out = append(out, r)
	}
	return newIndexSorted(out), nil
}

// newIndexSorted builds a sortedIndex from records known to be valid (as
// newIndex checks them; records decoded from a file, and merges and trims
// of valid records, are).
func newIndexSorted(recs []Record) *sortedIndex {
	ix := &sortedIndex{recs: recs}
	if len(recs) == 0 {
		return ix
	}
	ix.last = recs[len(recs)-1].End()
	ngroups := (len(recs) + leafSize - 1) / leafSize
	// Allocations above 32 KiB are page-aligned, so every group of a leaf
	// array too large for the L1 cache starts a cache line.
	ix.leaf = make([]packedRecord, ngroups*leafSize)
	for i := range ix.leaf {
		r := invalidRecord // padding ends at InvalidOffset, not below any query
		if i < len(recs) {
			r = recs[i]
		}
		ix.leaf[i] = packRecord(r)
	}
	maxEnds := make([]uint64, ngroups)
	for g := range maxEnds {
		maxEnds[g] = recs[min(g*leafSize+leafSize, len(recs))-1].End()
	}
	ix.tree.build(maxEnds)
	return ix
}

// Len is the number of records.
func (ix *sortedIndex) Len() int { return len(ix.recs) }

// Records returns the records in order. The slice must not be modified.
func (ix *sortedIndex) Records() []Record { return ix.recs }

// Find returns the position of the first record that ends after sector s,
// i.e. the record containing s or else the next one; Len() if none.
func (ix *sortedIndex) Find(s uint64) int {
	if s >= ix.last { // also the empty index
		return len(ix.recs)
	}
	// s < last, so the group exists and its padding is never counted; x
	// cannot overflow.
	x := s + 1
	g := ix.tree.lowerBound(x) * leafSize
	return g + countEndsBelow((*[leafSize]packedRecord)(ix.leaf[g:g+leafSize]), x)
}

// countEndsBelow counts the records of a group ending before x without
// branches: end-x has its top bit set exactly when end < x, both being
// below 2^51.
func countEndsBelow(grp *[leafSize]packedRecord, x uint64) int {
	var c uint64
	for i := range grp {
		c += (grp[i].end() - x) >> 63
	}
	return int(c)
}

// Lookup appends to dst the records intersecting the sector range
// [offset, offset+length), trimmed to it, and returns the extended slice.
// The records are decoded from the packed leaves the search has just
// brought into the cache, not read from Records.
func (ix *sortedIndex) Lookup(dst []Record, offset, length uint64) []Record {
	end := offset + length
	first := len(dst)
	for i := ix.Find(offset); i < len(ix.recs); i++ {
		p := ix.leaf[i]
		if p.w0&(1<<50-1) >= end {
			break
		}
		// Decoding in place: building the Record in a temporary and then
		// copying it makes the copy's 16-byte loads wait on the field
		// stores (a failed store forward), which cost 3× on 1 MiB scans.
		dst = append(dst, Record{})
		p.decode(&dst[len(dst)-1])
	}
	// Only the first and the last record can stick out of the range.
	if first < len(dst) {
		trimInPlace(&dst[first], offset, end)
		trimInPlace(&dst[len(dst)-1], offset, end)
	}
	return dst
}

// BlockCount is the number of sectors holding data (zeroed records excluded).
func (ix *sortedIndex) BlockCount() uint64 {
	var n uint64
	for _, r := range ix.recs {
		if !r.Zeroed {
			n += r.Length
		}
	}
	return n
}

// mergeIndexes builds the merged view of read-only layer indexes (docs/format-lsmt.md §7.2).
// layers is ordered bottom first, like NewStack's lowers. The upper layer
// always wins, its zeroed records included; gaps are filled from below.
// Each merged record's Tag is its layer's position counted from the top
// (0 = top-most), as in overlaybd.
func mergeIndexes(layers []*sortedIndex) (*sortedIndex, error) {
	if len(layers) > MaxLayers {
		return nil, fmt.Errorf("%w: %d layers, at most %d", ErrTooManyLayers, len(layers), MaxLayers)
	}
	var cur []Record
	for k := len(layers) - 1; k >= 0; k-- {
		tag := uint8(len(layers) - 1 - k)
		low := layers[k].recs
		if len(cur) == 0 {
			cur = make([]Record, len(low))
			for i, r := range low {
				r.Tag = tag
				cur[i] = r
			}
			continue
		}
		tagged := make([]Record, len(low))
		for i, r := range low {
			r.Tag = tag
			tagged[i] = r
		}
		cur = fillGaps(cur, tagged)
		if len(cur) > MaxIndexSize {
			return nil, fmt.Errorf("%w: merged index has %d records, at most %d", ErrIndexTooLarge, len(cur), MaxIndexSize)
		}
	}
	return newIndexSorted(cur), nil
}

// fillGaps returns cur plus the parts of low not covered by cur, in order.
// Both inputs are sorted and non-overlapping.
func fillGaps(cur, low []Record) []Record {
	out := make([]Record, 0, len(cur)+len(low))
	i := 0
	for _, r := range low {
		s, e := r.Offset, r.End()
		for s < e {
			for i < len(cur) && cur[i].End() <= s {
				out = append(out, cur[i])
				i++
			}
			if i < len(cur) && cur[i].Offset <= s {
				s = cur[i].End() // covered by the upper layer
				continue
			}
			ge := e
			if i < len(cur) && cur[i].Offset < ge {
				ge = cur[i].Offset
			}
			out = append(out, r.trim(s, ge))
			s = ge
		}
	}
	return append(out, cur[i:]...)
}

// compressRecords folds adjacent records in place like overlaybd's
// compress_raw_index (docs/format-lsmt.md §5.2 step 3) and returns the shortened slice:
// a record joins the previous one when it continues it both virtually and in
// the mapped file, with the same zeroed flag and tag, and the sum of lengths
// stays below MaxLength.
func compressRecords(recs []Record) []Record {
	if len(recs) == 0 {
		return recs
	}
	j := 0
	for _, r := range recs[1:] {
		if joinable(recs[j], r) {
			recs[j].Length += r.Length
			continue
		}
		j++
		recs[j] = r
	}
	return recs[:j+1]
}

// appendCompressed appends r to recs, folding it into the last record as
// compressRecords would; a sequence of appendCompressed calls equals one compressRecords.
func appendCompressed(recs []Record, r Record) []Record {
	if n := len(recs); n > 0 && joinable(recs[n-1], r) {
		recs[n-1].Length += r.Length
		return recs
	}
	return append(recs, r)
}

// joinable reports whether r continues p in compress_raw_index's sense.
func joinable(p, r Record) bool {
	return p.End() == r.Offset && p.mEnd() == r.MOffset && p.Zeroed == r.Zeroed && p.Tag == r.Tag && p.Length+r.Length < MaxLength
}

// stree is a static search tree over sorted keys ("S-tree"): nodes of
// streeB keys, each internal key the largest key of its child, stored level
// by level in one slice so a search touches one 128-byte node per level.
// Counting keys below x in a node is branch-free, which beats binary search
// on random lookups (overlaybd's lower_bound costs ~178 ns at 1M records).
type stree struct {
	keys  []uint64
	level []int // start of each level in keys, leaves first
	n     int
}

const (
	streeB   = 16
	streePad = 1 << 62 // above any sector; keeps k-x within int64 range
)

func (t *stree) build(ends []uint64) {
	t.n = len(ends)
	t.keys, t.level = nil, nil
	if t.n == 0 {
		return
	}
	total := 0
	for m := t.n; ; {
		m = (m + streeB - 1) / streeB * streeB
		total += m
		if m == streeB {
			break
		}
		m /= streeB
	}
	keys := make([]uint64, 0, total)
	cur := ends
	for {
		start := len(keys)
		t.level = append(t.level, start)
		keys = append(keys, cur...)
		for len(keys)%streeB != 0 {
			keys = append(keys, streePad)
		}
		lvl := keys[start:]
		if len(lvl) == streeB {
			break
		}
		next := make([]uint64, 0, len(lvl)/streeB)
		for i := streeB - 1; i < len(lvl); i += streeB {
			next = append(next, lvl[i])
		}
		cur = next
	}
	t.keys = keys
}

// lowerBound returns the number of keys < x (x < streePad).
func (t *stree) lowerBound(x uint64) int {
	if t.n == 0 || x >= streePad {
		return t.n
	}
	node := 0
	for l := len(t.level) - 1; ; l-- {
		base := t.level[l] + node*streeB
		j := count16((*[streeB]uint64)(t.keys[base:base+streeB]), x)
		if l == 0 {
			return min(node*streeB+j, t.n)
		}
		if j == streeB {
			return t.n
		}
		node = node*streeB + j
	}
}

// count16 counts keys below x without branches: k-x has its top bit set
// exactly when k < x, since both are below 2^62.
func count16(k *[streeB]uint64, x uint64) int {
	c := (k[0]-x)>>63 + (k[1]-x)>>63 + (k[2]-x)>>63 + (k[3]-x)>>63 +
		(k[4]-x)>>63 + (k[5]-x)>>63 + (k[6]-x)>>63 + (k[7]-x)>>63 +
		(k[8]-x)>>63 + (k[9]-x)>>63 + (k[10]-x)>>63 + (k[11]-x)>>63 +
		(k[12]-x)>>63 + (k[13]-x)>>63 + (k[14]-x)>>63 + (k[15]-x)>>63
	return int(c)
}
