package remote

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/obdfs/obdfs/internal/testlayer"
	"github.com/obdfs/obdfs/test/netshape"
)

var rtts = []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond}

// benchBlob puts size pseudo-random bytes in an in-process registry that
// adds rtt to every range GET, and returns its repoBlobUrl and digest.
func benchBlob(b *testing.B, size int, rtt time.Duration) (string, string, *fault) {
	host, f := inproc(b)
	data := testlayer.Random(1, size)
	d := putBlob(b, host, "bench/blob", data)
	return "http://" + shapedHost(b, host, rtt) + "/v2/bench/blob/blobs", d, f
}

// shapedHost puts the shaping proxy with rtt in front of host (every
// request pays it: auth, manifest and blob GETs) and returns its address.
func shapedHost(b testing.TB, host string, rtt time.Duration) string {
	p, err := netshape.Start(netshape.Config{Target: host}.WithRTT(rtt))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p.Addr()
}

// BenchmarkRegistryBlob: time to first byte of a cold blob, a sequential
// scan (1 and 4 readers), and sparse random 4 KiB reads, at several RTTs.
func BenchmarkRegistryBlob(b *testing.B) {
	const size = 8 << 20
	for _, rtt := range rtts {
		b.Run(fmt.Sprintf("rtt=%dms", rtt.Milliseconds()), func(b *testing.B) {
			url, dig, _ := benchBlob(b, size, rtt)
			open := func() *Blob {
				o := testOptions(b)
				bl, err := OpenBlob(context.Background(), url, dig, size, o)
				if err != nil {
					b.Fatal(err)
				}
				return bl
			}
			b.Run("ttfb", func(b *testing.B) {
				var total time.Duration
				for b.Loop() {
					start := time.Now()
					bl := open()
					p := make([]byte, 4096)
					if _, err := bl.ReadAt(p, 0); err != nil {
						b.Fatal(err)
					}
					total += time.Since(start)
					bl.Close()
				}
				b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/first-byte")
			})
			for _, readers := range []int{1, 4} {
				b.Run(fmt.Sprintf("scan/readers=%d", readers), func(b *testing.B) {
					b.SetBytes(size)
					var fetched int64
					for b.Loop() {
						bl := open()
						var wg sync.WaitGroup
						part := int64(size / readers)
						for r := range readers {
							wg.Go(func() {
								p := make([]byte, 128<<10)
								for off := int64(r) * part; off < int64(r+1)*part; off += int64(len(p)) {
									if _, err := bl.ReadAt(p, off); err != nil {
										b.Error(err)
										return
									}
								}
							})
						}
						wg.Wait()
						fetched += bl.Stats().FetchedBytes
						bl.Close()
					}
					b.ReportMetric(float64(fetched)/float64(b.N)/size, "fetched/read")
				})
			}
			b.Run("random4k", func(b *testing.B) {
				var read, fetched int64
				var total time.Duration
				for b.Loop() {
					bl := open()
					r := rand.New(rand.NewPCG(3, 4))
					p := make([]byte, 4096)
					start := time.Now()
					for range 64 { // 64 reads: 256 KiB of an 8 MiB blob
						off := r.Int64N(size/4096) * 4096
						if _, err := bl.ReadAt(p, off); err != nil {
							b.Fatal(err)
						}
					}
					total += time.Since(start)
					st := bl.Stats()
					read += st.ReadBytes
					fetched += st.FetchedBytes
					bl.Close()
				}
				b.ReportMetric(float64(fetched)/float64(read), "fetched/read")
				b.ReportMetric(float64(total.Microseconds())/float64(b.N)/64/1000, "ms/read")
			})
		})
	}
}

// BenchmarkColdMount: resolve the oracle 3-layer image by docker:// and
// open the stack (headers, indexes), then scan the whole 64 MiB disk.
func BenchmarkColdMount(b *testing.B) {
	files := fixtures(b, stackFiles...)
	for _, rtt := range rtts {
		b.Run(fmt.Sprintf("rtt=%dms", rtt.Milliseconds()), func(b *testing.B) {
			host, f := inproc(b)
			mustPush(b, "docker://"+host+"/bench/stack:v1", files, testOptions(b))
			ref := "docker://" + shapedHost(b, host, rtt) + "/bench/stack:v1"
			var mount, scan time.Duration
			var fetched, blobBytes, gets int64
			for b.Loop() {
				o := testOptions(b)
				g0 := f.gets.Load()
				start := time.Now()
				blobs, err := Resolve(context.Background(), ref, o)
				if err != nil {
					b.Fatal(err)
				}
				s, err := openStack(b, blobs)
				if err != nil {
					b.Fatal(err)
				}
				mount += time.Since(start)
				start = time.Now()
				if got, err := diskSum(s, s.Size()); err != nil || got != sumStack {
					b.Fatalf("content %s, %v", got, err)
				}
				scan += time.Since(start)
				gets += f.gets.Load() - g0
				for _, bl := range blobs {
					fetched += bl.Stats().FetchedBytes
					blobBytes += bl.Size()
				}
				closeBlobs(b, blobs)
			}
			n := float64(b.N)
			b.ReportMetric(float64(mount.Microseconds())/n/1000, "ms/mount")
			b.ReportMetric(float64(scan.Microseconds())/n/1000, "ms/scan")
			b.ReportMetric(float64(64<<20)/(float64(scan.Seconds())/n)/1e6, "MB/s-scan")
			b.ReportMetric(float64(fetched)/float64(blobBytes), "fetched/blob")
			b.ReportMetric(float64(gets)/n, "GETs")
		})
	}
}
