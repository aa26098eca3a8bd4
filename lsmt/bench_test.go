package lsmt

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
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

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1000, 100_000, 1_000_000} {
		rs, space := benchIndex(n)
		ix := mustIndex(b, rs)
		qs := make([]uint64, 1<<16)
		rng := rand.New(rand.NewPCG(2, 3))
		for i := range qs {
			qs[i] = rng.Uint64N(space)
		}
		b.Run(fmt.Sprintf("segments=%s", human(n)), func(b *testing.B) {
			b.ReportAllocs()
			s := 0
			for i := 0; b.Loop(); i++ {
				s += ix.Find(qs[i&(len(qs)-1)])
			}
			sinkInt = s
		})
		// Baseline: binary search over the records (like overlaybd's lower_bound).
		b.Run(fmt.Sprintf("binarysearch/segments=%s", human(n)), func(b *testing.B) {
			s := 0
			for i := 0; b.Loop(); i++ {
				q := qs[i&(len(qs)-1)]
				s += sort.Search(len(rs), func(j int) bool { return rs[j].End() > q })
			}
			sinkInt = s
		})
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
		ixs := make([]*Index, layers)
		for k := range ixs {
			rs, _ := benchIndex(20000)
			ixs[k] = mustIndex(b, rs)
		}
		b.Run(fmt.Sprintf("layers=%d/segments=20k", layers), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Merge(ixs); err != nil {
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
