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
	"syscall"
	"testing"
	"time"

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

// scan reads the whole layer with len(buf) reads and adds the process CPU
// time (every thread: GC, kernel page zeroing) to *cpu. On a loaded shared
// machine MB per CPU second is steadier than the wall-clock MB/s.
func scan(b *testing.B, z *zfile.Reader, buf []byte, cpu *time.Duration) {
	t0 := cpuTime()
	defer func() { *cpu += cpuTime() - t0 }()
	for off := int64(0); off < z.Size(); off += int64(len(buf)) {
		if _, err := z.ReadAt(buf, off); err != nil && off+int64(len(buf)) < z.Size() {
			b.Fatal(err)
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, size int64, cpu time.Duration) {
	b.ReportMetric(float64(size)*float64(b.N)/1e6/cpu.Seconds(), "MB/cpu-s")
}

func BenchmarkSeq1M(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.Run("nocache", func(b *testing.B) {
		z := open(b)
		b.SetBytes(z.Size())
		var cpu time.Duration
		for b.Loop() {
			scan(b, z, buf, &cpu)
		}
		reportCPU(b, z.Size(), cpu)
	})
	b.Run("coldcache", func(b *testing.B) {
		// A new cache per pass, as in a daemon that just started. The
		// layer has one reader, so whole blocks bypass the cache.
		var z *zfile.Reader
		var cpu time.Duration
		b.SetBytes(open(b).Size())
		for b.Loop() {
			b.StopTimer()
			z = open(b, zfile.WithCache(blockcache.New(1<<30).Open("l")))
			b.StartTimer()
			scan(b, z, buf, &cpu)
		}
		reportCPU(b, z.Size(), cpu)
	})
	b.Run("coldcache-shared", func(b *testing.B) {
		// As coldcache, with a second reader of the same layer open (as
		// when two stacks share it), so every block read is cached.
		var z *zfile.Reader
		var cpu time.Duration
		b.SetBytes(open(b).Size())
		for b.Loop() {
			b.StopTimer()
			c := blockcache.New(1 << 30)
			z = open(b, zfile.WithCache(c.Open("l")))
			open(b, zfile.WithCache(c.Open("l")))
			b.StartTimer()
			scan(b, z, buf, &cpu)
		}
		reportCPU(b, z.Size(), cpu)
	})
	b.Run("warmcache", func(b *testing.B) {
		// Two readers of the layer, so that the first scan caches it.
		c := blockcache.New(1 << 30)
		z := open(b, zfile.WithCache(c.Open("l")))
		open(b, zfile.WithCache(c.Open("l")))
		var cpu time.Duration
		scan(b, z, buf, &cpu)
		cpu = 0
		b.SetBytes(z.Size())
		b.ResetTimer()
		for b.Loop() {
			scan(b, z, buf, &cpu)
		}
		reportCPU(b, z.Size(), cpu)
	})
}
