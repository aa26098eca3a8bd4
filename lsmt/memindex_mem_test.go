package lsmt

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// BenchmarkMemIndexMemory measures the heap a writable layer's in-memory
// index holds per record after replaying a log of 8M 4 KiB writes at random
// places of a 64 GiB disk (few overlap: about 8M records remain), the shape
// of the 597 MB `cat`. Reported as bytes/record (heap in use after
// a GC, minus before) and ns per insert.
func BenchmarkMemIndexMemory(b *testing.B) {
	const n = 8 << 20
	const sectors = 64 << 30 / SectorSize
	for range b.N {
		rng := rand.New(rand.NewPCG(1, 2))
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m := newMemIndex()
		moff := uint64(dataStart)
		b.StartTimer()
		for range n {
			off := rng.Uint64N(sectors/8) * 8
			m.Insert(Record{Offset: off, Length: 8, MOffset: moff})
			moff += 8
		}
		m.Compact() // as the replay at open does
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(m.Len()), "bytes/record")
		b.ReportMetric(float64(m.Len()), "records")
		runtime.KeepAlive(m)
	}
}

// TestMemIndexModel checks memIndex against a sector map under random
// writes and discards of all sizes (many spanning blocks), with Compact at
// times: the records stay sorted and disjoint, Len counts them, and every
// sector maps where the last insert covering it put it.
func TestMemIndexModel(t *testing.T) {
	const sectors = 30000
	type cell struct {
		moff   uint64
		zeroed bool
		set    bool
	}
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 7))
		model := make([]cell, sectors)
		m := newMemIndex()
		moff := uint64(dataStart)
		for step := range 20000 {
			var l uint64
			switch rng.IntN(10) {
			case 0:
				l = 1 + rng.Uint64N(3000) // spans blocks
			case 1, 2:
				l = 1 + rng.Uint64N(64)
			default:
				l = 1 + rng.Uint64N(8)
			}
			off := rng.Uint64N(sectors - l)
			r := Record{Offset: off, Length: l, MOffset: moff, Zeroed: rng.IntN(5) == 0}
			m.Insert(r)
			for s := off; s < off+l; s++ {
				c := cell{moff: moff + s - off, zeroed: r.Zeroed, set: true}
				if r.Zeroed {
					c.moff = moff
				}
				model[s] = c
			}
			if !r.Zeroed {
				moff += l
			}
			if step%5000 == 4999 {
				m.Compact()
			}
			if step%97 == 0 {
				if s := m.check(); s != "" {
					t.Fatalf("seed %d step %d after %v: %s", seed, step, r, s)
				}
			}
			if step%997 != 0 && step != 19999 {
				continue
			}
			recs := m.Records()
			if len(recs) != m.Len() {
				t.Fatalf("seed %d step %d: Len %d, %d records", seed, step, m.Len(), len(recs))
			}
			if _, err := newIndex(append([]Record(nil), recs...)); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			got := make([]cell, sectors)
			for _, r := range recs {
				for s := r.Offset; s < r.End(); s++ {
					c := cell{moff: r.MOffset + s - r.Offset, zeroed: r.Zeroed, set: true}
					if r.Zeroed {
						c.moff = r.MOffset
					}
					got[s] = c
				}
			}
			for s := range got {
				if got[s] != model[s] {
					t.Fatalf("seed %d step %d: sector %d maps %+v, want %+v", seed, step, s, got[s], model[s])
				}
			}
			// Lookup of a random range equals the records trimmed to it.
			a := rng.Uint64N(sectors)
			b := a + 1 + rng.Uint64N(sectors-a)
			var want []Record
			for _, r := range recs {
				if r.End() > a && r.Offset < b {
					want = append(want, r.trim(a, b))
				}
			}
			if got := m.Lookup(nil, a, b-a); len(got) != len(want) || (len(want) > 0 && !equalRecords(got, want)) {
				t.Fatalf("seed %d step %d: lookup [%d,%d): %d records, want %d", seed, step, a, b, len(got), len(want))
			}
		}
	}
}

// check reports a broken memIndex invariant, or "".
func (m *memIndex) check() string {
	if len(m.blocks) != len(m.firsts) {
		return fmt.Sprintf("%d blocks, %d firsts", len(m.blocks), len(m.firsts))
	}
	var prev uint64
	n := 0
	for k, blk := range m.blocks {
		if len(blk) == 0 || len(blk) > memBlock {
			return fmt.Sprintf("block %d holds %d records", k, len(blk))
		}
		if m.firsts[k] != pOffset(blk[0]) {
			return fmt.Sprintf("firsts[%d] = %d, block starts at %d", k, m.firsts[k], pOffset(blk[0]))
		}
		for j, p := range blk {
			if (k > 0 || j > 0) && pOffset(p) < prev {
				return fmt.Sprintf("block %d record %d starts at %d before the previous end %d", k, j, pOffset(p), prev)
			}
			prev = p.end()
			n++
		}
	}
	if n != m.n {
		return fmt.Sprintf("Len %d, %d records", m.n, n)
	}
	return ""
}

func equalRecords(a, b []Record) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}
