package lsmt

import "sort"

// memIndex is the ordered, mutable index of a writable layer: records are
// inserted in log order and the last writer wins (docs/format-lsmt.md §10).
// It is not safe for concurrent use; RWFile guards it.
//
// A layer's log can hold millions of records, all in memory while it is
// open, so they are kept in their 16-byte on-disk layout (packedRecord) in
// sorted blocks of up to memBlock records, with the first offset of each
// block in a separate slice to search. A block that overflows passes
// records to a neighbour with room before it splits, and at the end of the
// index a new block is started (a sequential writer fills blocks whole).
// Compact packs the blocks full in place; the replay at open calls it, so a
// replayed index costs about 16 bytes per record. (A B-tree of 32-byte
// records, before, held about 49 bytes per record of heap.)
type memIndex struct {
	blocks  [][]packedRecord // each sorted, non-overlapping, 1..memBlock records
	firsts  []uint64         // firsts[k] = offset of blocks[k][0]
	n       int
	scratch []packedRecord // for overflows
}

// memBlock records of 16 bytes: 8 KiB blocks, few enough that inserting in
// the middle of one moves little, many enough that firsts stays small.
const memBlock = 512

// newMemIndex returns an empty memIndex.
func newMemIndex() *memIndex { return &memIndex{} }

// Len is the number of records.
func (m *memIndex) Len() int { return m.n }

func pOffset(p packedRecord) uint64 { return p.w0 & (1<<50 - 1) }

// find returns the position of the first record ending after sector s:
// block k, index i (k == len(blocks) if none).
func (m *memIndex) find(s uint64) (k, i int) {
	// The last block starting at or before s holds the record containing
	// s, if any; otherwise the answer is in it or starts the next one.
	k = sort.Search(len(m.firsts), func(j int) bool { return m.firsts[j] > s }) - 1
	if k < 0 {
		return 0, 0
	}
	blk := m.blocks[k]
	i = sort.Search(len(blk), func(j int) bool { return blk[j].end() > s })
	if i == len(blk) {
		return k + 1, 0
	}
	return k, i
}

// Insert adds r, trimming or splitting the records it overlaps. Records of
// length 0 are ignored.
func (m *memIndex) Insert(r Record) {
	if r.Length == 0 {
		return
	}
	b, e := r.Offset, r.End()
	k, i := m.find(b)
	// The records from (k, i) up to (k2, i2) overlap r: they are replaced
	// by the head of the first (if it starts before r), r, and the tail of
	// the last (if it ends after r).
	var add [3]packedRecord
	n := 0
	k2, i2 := k, i
	for k2 < len(m.blocks) {
		if i2 == len(m.blocks[k2]) {
			k2, i2 = k2+1, 0
			continue
		}
		var x Record
		m.blocks[k2][i2].decode(&x)
		if x.Offset >= e {
			break
		}
		i2++
		if x.Offset < b {
			add[n] = packRecord(x.trim(x.Offset, b))
			n++
		}
		if x.End() > e {
			add[n] = packRecord(r)
			add[n+1] = packRecord(x.trim(e, x.End()))
			m.splice(k, i, k2, i2, add[:n+2])
			return
		}
	}
	add[n] = packRecord(r)
	m.splice(k, i, k2, i2, add[:n+1])
}

// splice replaces the records from (k, i) up to (k2, i2), exclusive, with
// add (not empty).
func (m *memIndex) splice(k, i, k2, i2 int, add []packedRecord) {
	if k == len(m.blocks) { // past the last record
		m.n += len(add)
		if k == 0 {
			m.blocks = append(m.blocks, newBlock())
			m.firsts = append(m.firsts, pOffset(add[0]))
		} else {
			k--
		}
		m.replaceIn(k, len(m.blocks[k]), len(m.blocks[k]), add)
		return
	}
	if k2 >= len(m.blocks) {
		k2, i2 = len(m.blocks)-1, len(m.blocks[len(m.blocks)-1])
	}
	if k != k2 {
		// Cut block k at i, drop the blocks between, cut k2's head, and
		// continue as a replacement at the end of block k.
		removed := len(m.blocks[k]) - i + i2
		for j := k + 1; j < k2; j++ {
			removed += len(m.blocks[j])
		}
		m.n -= removed
		m.blocks[k] = m.blocks[k][:i]
		rest := m.blocks[k2][i2:]
		drop := k2
		if len(rest) == 0 {
			drop = k2 + 1
		} else {
			m.blocks[k2] = append(m.blocks[k2][:0], rest...) // rest is stale now
			m.firsts[k2] = pOffset(m.blocks[k2][0])
		}
		m.blocks = append(m.blocks[:k+1], m.blocks[drop:]...)
		m.firsts = append(m.firsts[:k+1], m.firsts[drop:]...)
		m.n += len(add)
		m.replaceIn(k, i, i, add)
		return
	}
	m.n += len(add) - (i2 - i)
	m.replaceIn(k, i, i2, add)
}

// newBlock allocates a block. Every block has room for memBlock records
// from the start: growing blocks by doubling would leave garbage behind
// each step, and the garbage, not the index, would set the peak RSS of a
// replay.
func newBlock() []packedRecord { return make([]packedRecord, 0, memBlock) }

// replaceIn replaces records [i, j) of block k with add. A block that
// overflows hands its excess to a neighbour with room, or starts a new block
// when it is the last one and add goes at its end (a sequential writer), or
// else splits in half; a block left empty is dropped.
func (m *memIndex) replaceIn(k, i, j int, add []packedRecord) {
	blk := m.blocks[k]
	newLen := len(blk) - (j - i) + len(add)
	if newLen == 0 {
		m.blocks = append(m.blocks[:k], m.blocks[k+1:]...)
		m.firsts = append(m.firsts[:k], m.firsts[k+1:]...)
		return
	}
	if newLen <= cap(blk) {
		old := len(blk)
		blk = blk[:max(old, newLen)]
		copy(blk[i+len(add):], blk[j:old])
		copy(blk[i:], add)
		m.blocks[k] = blk[:newLen]
		m.firsts[k] = pOffset(blk[0])
		return
	}
	// The merged run, built in a scratch buffer kept for the next overflow.
	merged := append(append(append(m.scratch[:0], blk[:i]...), add...), blk[j:]...)
	m.scratch = merged[:0]
	excess := newLen - cap(blk)
	switch {
	case k == len(m.blocks)-1 && j == len(blk):
		m.setBlock(k, append(blk[:0], merged[:cap(blk)]...))
		m.insertBlock(k+1, append(newBlock(), merged[cap(blk):]...))
	case k+1 < len(m.blocks) && len(m.blocks[k+1])+excess <= cap(m.blocks[k+1]):
		next := m.blocks[k+1]
		n := len(next)
		next = next[:n+excess]
		copy(next[excess:], next[:n])
		copy(next, merged[cap(blk):])
		m.setBlock(k+1, next)
		m.setBlock(k, append(blk[:0], merged[:cap(blk)]...))
	case k > 0 && len(m.blocks[k-1])+excess <= cap(m.blocks[k-1]):
		m.setBlock(k-1, append(m.blocks[k-1], merged[:excess]...))
		m.setBlock(k, append(blk[:0], merged[excess:]...))
	default:
		half := newLen / 2
		m.setBlock(k, append(blk[:0], merged[:half]...))
		m.insertBlock(k+1, append(newBlock(), merged[half:]...))
	}
}

func (m *memIndex) setBlock(k int, blk []packedRecord) {
	m.blocks[k] = blk
	m.firsts[k] = pOffset(blk[0])
}

func (m *memIndex) insertBlock(k int, blk []packedRecord) {
	m.blocks = append(m.blocks, nil)
	copy(m.blocks[k+1:], m.blocks[k:])
	m.firsts = append(m.firsts, 0)
	copy(m.firsts[k+1:], m.firsts[k:])
	m.setBlock(k, blk)
}

// Compact packs the records into as few blocks as they fit, in place (no
// block is allocated), and lets the emptied ones go. The replay at open
// calls it once at the end: random writes leave blocks about three quarters
// full.
func (m *memIndex) Compact() {
	if len(m.blocks) == 0 {
		return
	}
	w := 0
	dst := m.blocks[0][:0]
	for r := range m.blocks {
		src := m.blocks[r] // read before block r is written (only once w reaches r)
		for len(src) > 0 {
			if len(dst) == cap(dst) {
				m.blocks[w] = dst
				w++
				dst = m.blocks[w][:0]
			}
			c := min(cap(dst)-len(dst), len(src))
			// dst is behind src (or the same place): copy moves left.
			dst = append(dst, src[:c]...)
			src = src[c:]
		}
	}
	m.blocks[w] = dst
	clear(m.blocks[w+1:])
	m.blocks = m.blocks[:w+1]
	m.firsts = m.firsts[:w+1]
	for k, blk := range m.blocks {
		m.firsts[k] = pOffset(blk[0])
	}
	m.scratch = nil
}

// Lookup appends the records intersecting [offset, offset+length), trimmed.
func (m *memIndex) Lookup(dst []Record, offset, length uint64) []Record {
	end := offset + length
	for k, i := m.find(offset); k < len(m.blocks); k, i = k+1, 0 {
		for _, p := range m.blocks[k][i:] {
			if pOffset(p) >= end {
				return dst
			}
			dst = append(dst, Record{})
			r := &dst[len(dst)-1]
			p.decode(r)
			trimInPlace(r, offset, end)
		}
	}
	return dst
}

// Records returns all records in order (a copy).
func (m *memIndex) Records() []Record {
	out := make([]Record, 0, m.n)
	for _, blk := range m.blocks {
		for _, p := range blk {
			out = append(out, Record{})
			p.decode(&out[len(out)-1])
		}
	}
	return out
}

// BlockCount is the number of sectors holding data.
func (m *memIndex) BlockCount() uint64 {
	var n uint64
	for _, blk := range m.blocks {
		for _, p := range blk {
			if p.w1>>55&1 == 0 {
				n += p.w0 >> 50
			}
		}
	}
	return n
}
