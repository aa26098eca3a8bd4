package zfile

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

const benchSize = 64 << 20

var benchData = sync.OnceValue(func() []byte { return mixed(benchSize) })

var benchFiles sync.Map // Algorithm -> []byte

func benchFile(b *testing.B, algo Algorithm) []byte {
	if v, ok := benchFiles.Load(algo); ok {
		return v.([]byte)
	}
	_, z, err := compress(b, benchData(), WriterOptions{Algorithm: algo, Concurrency: 2})
	if err != nil {
		b.Fatal(err)
	}
	benchFiles.Store(algo, z)
	return z
}

// BenchmarkReadAt reads 64 MiB of mixed data (text, random, zeros; lz4 ratio
// about 0.45) from a ZFile in memory: random 4 KiB reads and sequential 1 MiB
// reads, per core (no RunParallel) and on every core (parallel).
func BenchmarkReadAt(b *testing.B) {
	for _, algo := range []Algorithm{LZ4, Zstd} {
		for _, cached := range []bool{false, true} {
			for _, mode := range []string{"rand4k", "seq1m", "rand4k-parallel", "seq1m-parallel"} {
				name := fmt.Sprintf("%v/%s", algo, mode)
				if cached {
					name = fmt.Sprintf("%v/cached-%s", algo, mode)
				}
				b.Run(name, func(b *testing.B) {
					zdata := benchFile(b, algo)
					var opts []Option
					if cached {
						// Holds the whole content: steady state is all hits
						// (shared, so that the warm-up scan caches it).
						opts = append(opts, sharedCache.opts(2*benchSize, "bench")...)
					}
					z, err := NewReader(bytes.NewReader(zdata), int64(len(zdata)), opts...)
					if err != nil {
						b.Fatal(err)
					}
					size := 4096
					if mode == "seq1m" || mode == "seq1m-parallel" {
						size = 1 << 20
					}
					if cached {
						if err := Decompress(discard{}, z); err != nil {
							b.Fatal(err)
						}
					}
					b.SetBytes(int64(size))
					b.ReportAllocs()
					b.ResetTimer()
					if mode == "rand4k" || mode == "seq1m" {
						buf := make([]byte, size)
						rng := rand.New(rand.NewPCG(1, 2))
						off := int64(0)
						for b.Loop() {
							if size == 4096 {
								off = rng.Int64N(benchSize/4096) * 4096
							}
							if _, err := z.ReadAt(buf, off); err != nil {
								b.Fatal(err)
							}
							if size != 4096 {
								off = (off + int64(size)) % benchSize
							}
						}
						return
					}
					var seed sync.Mutex
					s := uint64(0)
					b.RunParallel(func(pb *testing.PB) {
						seed.Lock()
						s++
						rng := rand.New(rand.NewPCG(s, 2))
						seed.Unlock()
						buf := make([]byte, size)
						for pb.Next() {
							off := rng.Int64N(benchSize/int64(size)) * int64(size)
							if _, err := z.ReadAt(buf, off); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkReadAtFile reads through an *os.File (page cache warm), where
// each batch costs a pread: this is where the batch size shows.
func BenchmarkReadAtFile(b *testing.B) {
	for _, algo := range []Algorithm{LZ4, Zstd} {
		for _, size := range []int{4096, 1 << 20} {
			b.Run(fmt.Sprintf("%v/seq%dk", algo, size>>10), func(b *testing.B) {
				p := filepath.Join(b.TempDir(), "bench.zfile")
				if err := os.WriteFile(p, benchFile(b, algo), 0o644); err != nil {
					b.Fatal(err)
				}
				f, err := os.Open(p)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				st, _ := f.Stat()
				z, err := NewReader(f, st.Size())
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, size)
				b.SetBytes(int64(size))
				off := int64(0)
				for b.Loop() {
					if _, err := z.ReadAt(buf, off); err != nil {
						b.Fatal(err)
					}
					off = (off + int64(size)) % benchSize
				}
			})
		}
	}
}

// BenchmarkWrite compresses the same 64 MiB.
func BenchmarkWrite(b *testing.B) {
	for _, algo := range []Algorithm{LZ4, Zstd} {
		for _, conc := range []int{1, 2} {
			b.Run(fmt.Sprintf("%v/conc%d", algo, conc), func(b *testing.B) {
				data := benchData()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					zw, err := NewWriter(discard{}, WriterOptions{Algorithm: algo, Concurrency: conc})
					if err != nil {
						b.Fatal(err)
					}
					zw.Write(data)
					if err := zw.Close(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
