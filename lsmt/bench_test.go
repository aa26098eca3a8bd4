package lsmt

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// benchIndex builds n records with small random gaps.
func benchIndex(n int) ([]Record, uint64) {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	rs := make([]Record, n)
	var off uint64
	for i := range rs {
		off += uint64(rng.IntN(8))
		l := 1 + uint64(rng.IntN(64))
		rs[i] = Record{Offset: off, Length: l, MOffset: 8 + uint64(i)}
		off += l
	}
	return rs, off
}

var sinkInt int

// Lookup strategies compared in the same run. everyEnd is the previous
// design (an S-tree over every record's end, then the 32-byte Record array:
// two cache misses at the bottom); binarySearch is what overlaybd's
// lower_bound does.
type lookupFunc func(dst []Record, offset, length uint64) []Record

func lookupVariants(b *testing.B, rs []Record) []struct {
	name   string
	lookup lookupFunc
} {
	ix := mustIndex(b, rs)
	ends := make([]uint64, len(rs))
	for i, r := range rs {
		ends[i] = r.End()
	}
	var every stree
	every.build(ends)
	trimFrom := func(dst []Record, i int, offset, length uint64) []Record {
		end := offset + length
		for ; i < len(rs) && rs[i].Offset < end; i++ {
			dst = append(dst, rs[i].trim(offset, end))
		}
		return dst
	}
	return []struct {
		name   string
		lookup lookupFunc
	}{
		{"index", ix.Lookup},
		{"stree-every-end", func(dst []Record, offset, length uint64) []Record {
			return trimFrom(dst, every.lowerBound(offset+1), offset, length)
		}},
		{"binarysearch", func(dst []Record, offset, length uint64) []Record {
			lo, hi := 0, len(rs)
			for lo < hi {
				m := int(uint(lo+hi) >> 1)
				if rs[m].End() <= offset {
					lo = m + 1
				} else {
					hi = m
				}
			}
			return trimFrom(dst, lo, offset, length)
		}},
	}
}

// BenchmarkLookup is one 4 KiB read at a random sector of the whole range:
// the search plus reading the record(s) found. Iterations are independent,
// like concurrent random reads of a block device.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1000, 100_000, 1_000_000} {
		rs, space := benchIndex(n)
		qs := make([]uint64, 1<<16)
		rng := rand.New(rand.NewPCG(2, 3))
		for i := range qs {
			qs[i] = rng.Uint64N(space)
		}
		for _, v := range lookupVariants(b, rs) {
			b.Run(fmt.Sprintf("segments=%s/%s", human(n), v.name), func(b *testing.B) {
				b.ReportAllocs()
				dst := make([]Record, 0, 16)
				s := 0
				for i := 0; b.Loop(); i++ {
					s += len(v.lookup(dst[:0], qs[i&(len(qs)-1)], 8))
				}
				sinkInt = s
			})
		}
	}
}

// BenchmarkLookupScan is a sequential 1 MiB read: each lookup starts where
// the previous one ended and walks consecutive records.
func BenchmarkLookupScan(b *testing.B) {
	const sectors = 1 << 20 / SectorSize
	for _, n := range []int{1000, 100_000, 1_000_000} {
		rs, space := benchIndex(n)
		for _, v := range lookupVariants(b, rs)[:2] {
			b.Run(fmt.Sprintf("segments=%s/%s", human(n), v.name), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(1 << 20)
				dst := make([]Record, 0, 256)
				s, off := 0, uint64(0)
				for b.Loop() {
					s += len(v.lookup(dst[:0], off, sectors))
					if off += sectors; off >= space {
						off = 0
					}
				}
				sinkInt = s
			})
		}
	}
}

func human(n int) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func BenchmarkMerge(b *testing.B) {
	for _, layers := range []int{3, 50} {
		ixs := make([]*sortedIndex, layers)
		for k := range ixs {
			rs, _ := benchIndex(20000)
			ixs[k] = mustIndex(b, rs)
		}
		b.Run(fmt.Sprintf("layers=%d/segments=20k", layers), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := mergeIndexes(ixs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// memLayers builds n committed in-memory layers of a 64 MiB disk: the
// bottom one fully written, each other with 200 random 4 KiB writes, so
// every read hits data whatever the depth.
func memLayers(b *testing.B, n int) []*File {
	const vsize = 64 << 20
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 4096)
	var out []*File
	for l := 0; l < n; l++ {
		rw, err := Create(filepath.Join(dir, fmt.Sprint("d", l)), filepath.Join(dir, fmt.Sprint("x", l)), CreateOptions{VirtualSize: vsize})
		if err != nil {
			b.Fatal(err)
		}
		if l == 0 {
			full := make([]byte, MaxIOSize)
			for off := int64(0); off < vsize; off += MaxIOSize {
				rw.WriteAt(full, off)
			}
		}
		for i := 0; i < 200 && l > 0; i++ {
			buf[0] = byte(i)
			rw.WriteAt(buf, rng.Int64N(vsize/4096)*4096)
		}
		var c bytes.Buffer
		Commit(&c, rw, CommitArgs{})
		rw.Close()
		f, err := NewFile(bytes.NewReader(c.Bytes()), int64(c.Len()), fmt.Sprint("l", l))
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

func BenchmarkStackRead(b *testing.B) {
	for _, n := range []int{3, 50} {
		s, err := NewStack(memLayers(b, n), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("layers=%d", n), func(b *testing.B) {
			b.SetBytes(4096)
			b.ReportAllocs()
			p := make([]byte, 4096)
			rng := rand.New(rand.NewPCG(8, 9))
			for b.Loop() {
				if _, err := s.ReadAt(p, rng.Int64N(s.Size()/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("layers=%d/parallel", n), func(b *testing.B) {
			b.SetBytes(4096)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				p := make([]byte, 4096)
				rng := rand.New(rand.NewPCG(8, 10))
				for pb.Next() {
					if _, err := s.ReadAt(p, rng.Int64N(s.Size()/4096)*4096); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkRWWrite(b *testing.B) {
	f, _, _ := newRW(b, 1<<30)
	p := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 1))
	b.SetBytes(4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.WriteAt(p, rng.Int64N(1<<30/4096)*4096); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemLatency chases pointers through a random cycle of 64-byte
// lines: each load waits for the previous one, so ns/op is this machine's
// latency per cache or DRAM miss at that working-set size, the floor under
// BenchmarkLookup at 1M segments.
func BenchmarkMemLatency(b *testing.B) {
	for _, size := range []int{16 << 10, 1 << 20, 16 << 20, 64 << 20} {
		lines := size / 64
		next := make([]int, lines*8) // one int used per 64-byte line
		perm := rand.New(rand.NewPCG(4, 5)).Perm(lines)
		for i, p := range perm {
			next[p*8] = perm[(i+1)%lines] * 8
		}
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) {
			p := 0
			for b.Loop() {
				p = next[p]
			}
			sinkInt = p
		})
	}
}
