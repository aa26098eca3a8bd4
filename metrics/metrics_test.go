package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/internal/fixture"
)

// openStack opens the oracle stack (ZFile base + two LSMT layers) with a
// decoded-block cache, as the daemons do.
func openStack(t testing.TB, cache *blockcache.Cache) *image.Stack {
	t.Helper()
	spec := strings.Join([]string{fixture.Oracle(t, "b/base.lz4.zfile"), fixture.Oracle(t, "d/l2.lsmt"), fixture.Oracle(t, "d/l3.lsmt")}, ",")
	s, err := image.Open(spec, image.Options{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	cl := http.Client{}
	url := "http://" + addr + "/metrics"
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		cl.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}
		url = "http://unix/metrics"
	}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: HTTP %d, %v", resp.StatusCode, err)
	}
	return string(b)
}

// TestScrape serves the metrics of a wrapped stack on a unix socket and
// checks the series after reads, then that Forget drops the stack's.
func TestScrape(t *testing.T) {
	cache := blockcache.New(64 << 20)
	m := New("fuse", cache)
	d := m.Wrap("s", openStack(t, cache))
	if _, ok := d.(disk.Layered); !ok {
		t.Fatal("the wrapper hides disk.Layered")
	}
	sock := filepath.Join(t.TempDir(), "m.sock")
	ln, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := m.Serve(ln)
	defer srv.Close()
	p := make([]byte, 1<<20)
	for off := int64(0); off < 8<<20; off += int64(len(p)) {
		if _, err := d.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.ReadAt(p, -1); err == nil {
		t.Fatal("negative offset read succeeded")
	}
	out := scrape(t, "unix:"+sock)
	for _, want := range []string{
		`obdfs_stack_reads_total{frontend="fuse",stack="s"} 9`,
		`obdfs_stack_read_bytes_total{frontend="fuse",stack="s"} 8.388608e+06`,
		`obdfs_stack_errors_total{frontend="fuse",stack="s"} 1`,
		`obdfs_stack_read_duration_seconds_count{frontend="fuse",stack="s"} 9`,
		`obdfs_layer_backing_read_bytes_total{digest="",kind="zfile+lsmt",layer="` + fixture.Oracle(t, "b/base.lz4.zfile") + `",stack="s"}`,
		`obdfs_layer_cache_misses_total{`,
		`obdfs_block_cache_max_bytes 6.7108864e+07`,
		`go_goroutines`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in the scrape", want)
		}
	}
	m.Forget("s")
	if out := scrape(t, "unix:"+sock); strings.Contains(out, `stack="s"`) {
		t.Error("series of a forgotten stack are still exported")
	}
}

// TestReadAllocs: the instrumented read path allocates nothing per request.
func TestReadAllocs(t *testing.T) {
	m := New("ublk", nil)
	d := m.Wrap("mem", disk.NewMem(make([]byte, 1<<20), true))
	p := make([]byte, 4096)
	if n := testing.AllocsPerRun(1000, func() { d.ReadAt(p, 8192) }); n != 0 {
		t.Errorf("%v allocations per read", n)
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen("127.0.0.1:notaport"); err == nil || !strings.Contains(err.Error(), "--metrics") {
		t.Errorf("bad TCP address: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "m.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("socket in use: %v", err)
	}
}

// BenchmarkRead: 128 KiB reads of the fixture stack (decoded-block cache
// warm) plain and through the metrics wrapper; the difference is the cost
// of --metrics on the request path (docs/PERFORMANCE.md).
func BenchmarkRead(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "metrics"}[wrapped]
		b.Run(name, func(b *testing.B) {
			cache := blockcache.New(256 << 20)
			var d disk.Disk = openStack(b, cache)
			if wrapped {
				d = New("fuse", cache).Wrap("s", d)
			}
			p := make([]byte, 128<<10)
			size := d.Size()
			for off := int64(0); off < size; off += int64(len(p)) { // warm
				d.ReadAt(p, off)
			}
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			off := int64(0)
			for b.Loop() {
				if _, err := d.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(p))) % size
			}
		})
	}
}

// BenchmarkOverhead: 4 KiB reads of an in-memory disk, plain and wrapped:
// the difference is the absolute cost per request of the instrumentation.
func BenchmarkOverhead(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "metrics"}[wrapped], func(b *testing.B) {
			var d disk.Disk = disk.NewMem(make([]byte, 1<<20), true)
			if wrapped {
				d = New("fuse", nil).Wrap("s", d)
			}
			p := make([]byte, 4096)
			b.ReportAllocs()
			off := int64(0)
			for b.Loop() {
				d.ReadAt(p, off)
				off = (off + 4096) % (1 << 20)
			}
		})
	}
}
