// Package zfileprof profiles the cold sequential read path of a committed
// layer outside FUSE: the same 1 MiB reads the kernel sends, through
// zfile.Reader with no cache, a cold shared cache and a warm one. The layer
// is BENCH_ZFILE (e.g. a layer built by test/bench/side-by-side.sh with
// BENCH_KEEP=1); without it the benchmarks skip.
//
//	BENCH_ZFILE=/var/tmp/obdfs-bench/data/l1.lz4 go test -bench . -cpuprofile cpu.out ./test/bench/zfileprof
package zfileprof

import (
	"os"
	"testing"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/zfile"
)

func open(b *testing.B, opts ...zfile.Option) *zfile.Reader {
	b.Helper()
	path := os.Getenv("BENCH_ZFILE")
	if path == "" {
		b.Skip("BENCH_ZFILE not set: no layer to read")
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	z, err := zfile.NewReader(f, st.Size(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	return z
}

func scan(b *testing.B, z *zfile.Reader, buf []byte) {
	for off := int64(0); off < z.Size(); off += int64(len(buf)) {
		if _, err := z.ReadAt(buf, off); err != nil && off+int64(len(buf)) < z.Size() {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeq1M(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.Run("nocache", func(b *testing.B) {
		z := open(b)
		b.SetBytes(z.Size())
		for b.Loop() {
			scan(b, z, buf)
		}
	})
	b.Run("coldcache", func(b *testing.B) {
		// A new cache per pass: every block is decoded into a fresh
		// buffer, as in a daemon that just started.
		var z *zfile.Reader
		b.SetBytes(open(b).Size())
		for b.Loop() {
			b.StopTimer()
			z = open(b, zfile.WithCache(blockcache.New(1<<30), "l"))
			b.StartTimer()
			scan(b, z, buf)
		}
	})
	b.Run("warmcache", func(b *testing.B) {
		z := open(b, zfile.WithCache(blockcache.New(1<<30), "l"))
		scan(b, z, buf)
		b.SetBytes(z.Size())
		b.ResetTimer()
		for b.Loop() {
			scan(b, z, buf)
		}
	})
}
