// Package metrics exports a daemon's counters in the Prometheus exposition
// format (--metrics ADDR of obdfs mount and obdfs ublk attach).
//
// The request path is instrumented by Disk, a disk.Disk wrapper that
// counts reads, writes, bytes and errors and observes each read's latency
// in a histogram, through label children resolved once per stack, so a
// request allocates nothing. Everything else (per-layer counters, the
// decoded-block cache, the registry blob cache and background download,
// the registry hosts) already has counters of its own; a collector reads
// them when Prometheus scrapes, which costs the request path nothing.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/internal/unixsock"
	"github.com/obdfs/obdfs/remote"
)

// Metrics is the registry of one daemon.
type Metrics struct {
	reg      *prometheus.Registry
	frontend string // "fuse" or "ublk"
	cache    *blockcache.Cache

	reads, readBytes, writes, writeBytes, errors *prometheus.CounterVec
	readLat, writeLat                            *prometheus.HistogramVec

	mu    sync.Mutex
	disks map[string]*Disk
}

// Latency buckets: 50 µs (a cached block) to 10 s (a registry fetch with
// retries).
var buckets = []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// New makes the registry of a daemon serving stacks through frontend
// ("fuse", "ublk"); cache is its decoded-block cache (nil: none).
func New(frontend string, cache *blockcache.Cache) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), frontend: frontend, cache: cache, disks: map[string]*Disk{}}
	labels := []string{"stack", "frontend"}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "obdfs", Subsystem: "stack", Name: name, Help: help}, labels)
	}
	m.reads = counter("reads_total", "Read requests served.")
	m.readBytes = counter("read_bytes_total", "Bytes returned by reads.")
	m.writes = counter("writes_total", "Write requests served.")
	m.writeBytes = counter("write_bytes_total", "Bytes written.")
	m.errors = counter("errors_total", "Requests that failed (returned EIO to the front end).")
	m.readLat = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "obdfs", Subsystem: "stack", Name: "read_duration_seconds",
		Help: "Time to serve a read request, from the front end's call into the stack to its return.", Buckets: buckets}, labels)
	m.writeLat = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "obdfs", Subsystem: "stack", Name: "write_duration_seconds",
		Help: "Time to serve a write request.", Buckets: buckets}, labels)
	m.reg.MustRegister(m.reads, m.readBytes, m.writes, m.writeBytes, m.errors, m.readLat, m.writeLat,
		collector{m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the Prometheus registry (for tests and embedding).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Disk is an instrumented disk.Disk; it keeps disk.Layered.
type Disk struct {
	disk.Disk
	name                                      string
	reads, readBytes, writes, writeBytes, err prometheus.Counter
	readLat, writeLat                         prometheus.Observer
}

// Wrap instruments d as stack name (replacing an earlier stack of that name).
func (m *Metrics) Wrap(name string, d disk.Disk) disk.Disk {
	l := prometheus.Labels{"stack": name, "frontend": m.frontend}
	w := &Disk{Disk: d, name: name,
		reads: m.reads.With(l), readBytes: m.readBytes.With(l), writes: m.writes.With(l), writeBytes: m.writeBytes.With(l),
		err: m.errors.With(l), readLat: m.readLat.With(l), writeLat: m.writeLat.With(l)}
	m.mu.Lock()
	m.disks[name] = w
	m.mu.Unlock()
	return w
}

// Forget drops the series of a stack that is no longer served.
func (m *Metrics) Forget(name string) {
	m.mu.Lock()
	delete(m.disks, name)
	m.mu.Unlock()
	l := prometheus.Labels{"stack": name, "frontend": m.frontend}
	for _, v := range []*prometheus.CounterVec{m.reads, m.readBytes, m.writes, m.writeBytes, m.errors} {
		v.Delete(l)
	}
	m.readLat.Delete(l)
	m.writeLat.Delete(l)
}

func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := d.Disk.ReadAt(p, off)
	d.readLat.Observe(time.Since(start).Seconds())
	d.reads.Inc()
	d.readBytes.Add(float64(n))
	if err != nil && !(errors.Is(err, io.EOF) && n == len(p)) {
		d.err.Inc()
	}
	return n, err
}

func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := d.Disk.WriteAt(p, off)
	d.writeLat.Observe(time.Since(start).Seconds())
	d.writes.Inc()
	d.writeBytes.Add(float64(n))
	if err != nil {
		d.err.Inc()
	}
	return n, err
}

// Layers forwards disk.Layered (nil when the disk has no layers).
func (d *Disk) Layers() []disk.LayerInfo {
	if l, ok := d.Disk.(disk.Layered); ok {
		return l.Layers()
	}
	return nil
}

// Unwrap returns the instrumented disk.
func (d *Disk) Unwrap() disk.Disk { return d.Disk }

// Listen opens addr for Serve: HOST:PORT (TCP), or unix:PATH / an absolute
// path (a unix socket, mode 0600; a stale socket file is replaced).
func Listen(addr string) (net.Listener, error) {
	path, unix := strings.CutPrefix(addr, "unix:")
	if !unix && strings.HasPrefix(addr, "/") {
		path, unix = addr, true
	}
	if !unix {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("--metrics %s: %w", addr, err)
		}
		return ln, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	ln, err := unixsock.Listen(path) // unixsock.ErrInUse reads "another process listens there"
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	return ln, nil
}

// Server serves /metrics until Close.
type Server struct {
	srv  *http.Server
	done chan struct{}
	Addr string
}

// Serve serves the registry on ln at /metrics (and /).
func (m *Metrics) Serve(ln net.Listener) *Server {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slogLogger{}})
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	mux.Handle("/", h)
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, done: make(chan struct{}), Addr: ln.Addr().String()}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("metrics server", "err", err)
		}
	}()
	return s
}

// Close stops the server and waits for it.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

type slogLogger struct{}

func (slogLogger) Println(v ...any) { slog.Error("metrics", "err", fmt.Sprint(v...)) }

// collector reads the counters kept elsewhere at scrape time.
type collector struct{ m *Metrics }

var (
	layerLabels = []string{"stack", "layer", "digest", "kind"}
	hostLabels  = []string{"host"}

	descLayerReads     = prometheus.NewDesc("obdfs_layer_backing_reads_total", "Read calls on a layer's backing file or blob (shared by the stacks using it).", layerLabels, nil)
	descLayerBytes     = prometheus.NewDesc("obdfs_layer_backing_read_bytes_total", "Bytes read from a layer's backing file or blob.", layerLabels, nil)
	descLayerHits      = prometheus.NewDesc("obdfs_layer_cache_hits_total", "Decoded-block cache hits of a compressed layer.", layerLabels, nil)
	descLayerMisses    = prometheus.NewDesc("obdfs_layer_cache_misses_total", "Decoded-block cache misses (blocks decoded) of a compressed layer.", layerLabels, nil)
	descBlobSize       = prometheus.NewDesc("obdfs_layer_blob_size_bytes", "Size of a registry layer's blob.", layerLabels, nil)
	descBlobCached     = prometheus.NewDesc("obdfs_layer_blob_cached_bytes", "Bytes of a registry layer's blob in the persistent blob cache (background download progress).", layerLabels, nil)
	descBlobVerified   = prometheus.NewDesc("obdfs_layer_blob_verified", "1 when the cached blob is complete and matched its digest.", layerLabels, nil)
	descBlobFetches    = prometheus.NewDesc("obdfs_layer_fetches_total", "Range GETs made for a registry layer.", layerLabels, nil)
	descBlobFetched    = prometheus.NewDesc("obdfs_layer_fetched_bytes_total", "Bytes received from the registry for a layer.", layerLabels, nil)
	descBlobAhead      = prometheus.NewDesc("obdfs_layer_ahead_bytes_total", "Of the fetched bytes, those fetched ahead of readers (readahead, trace replay).", layerLabels, nil)
	descBlobBackground = prometheus.NewDesc("obdfs_layer_background_bytes_total", "Of the fetched bytes, those fetched by the background download.", layerLabels, nil)
	descBlobBgState    = prometheus.NewDesc("obdfs_layer_background_state", "1 for the state of a registry layer's background download (waiting, running, done, failed, ...).", append(layerLabels, "state"), nil)
	descCacheBytes     = prometheus.NewDesc("obdfs_block_cache_bytes", "Bytes held by the decoded-block cache.", nil, nil)
	descCacheMax       = prometheus.NewDesc("obdfs_block_cache_max_bytes", "Bound of the decoded-block cache.", nil, nil)
	descHostRequests   = prometheus.NewDesc("obdfs_registry_requests_total", "HTTP requests sent to a registry, mirror, token server or blob storage host.", hostLabels, nil)
	descHostBytes      = prometheus.NewDesc("obdfs_registry_received_bytes_total", "Response body bytes received from a host.", hostLabels, nil)
	descHostErrors     = prometheus.NewDesc("obdfs_registry_errors_total", "Requests to a host that failed or answered 4xx/5xx.", hostLabels, nil)
	descHostRetries    = prometheus.NewDesc("obdfs_registry_retries_total", "Range GETs and probes tried again at a registry.", hostLabels, nil)
	descHostFallbacks  = prometheus.NewDesc("obdfs_registry_mirror_fallbacks_total", "Requests a mirror failed or lacked the blob for, passed on to the next host.", hostLabels, nil)
	allDescs           = []*prometheus.Desc{descLayerReads, descLayerBytes, descLayerHits, descLayerMisses, descBlobSize, descBlobCached,
		descBlobVerified, descBlobFetches, descBlobFetched, descBlobAhead, descBlobBackground, descBlobBgState, descCacheBytes, descCacheMax,
		descHostRequests, descHostBytes, descHostErrors, descHostRetries, descHostFallbacks}
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	disks := make([]*Disk, 0, len(m.disks))
	for _, d := range m.disks {
		disks = append(disks, d)
	}
	m.mu.Unlock()
	counter := func(d *prometheus.Desc, v int64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v int64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), l...)
	}
	for _, d := range disks {
		seen := map[string]bool{}
		for i, li := range d.Layers() {
			if li.Kind == "rw" || !li.ReadOnly {
				continue // the writable upper: its traffic is the stack's
			}
			name := li.Name
			if seen[name] {
				name = fmt.Sprintf("%s#%d", name, i)
			}
			seen[name] = true
			l := []string{d.name, name, digestOf(li.Identity), li.Kind}
			counter(descLayerReads, li.BackingReads, l...)
			counter(descLayerBytes, li.BackingBytes, l...)
			counter(descLayerHits, li.CacheHits, l...)
			counter(descLayerMisses, li.CacheMisses, l...)
			if f := li.Fetch; f != nil {
				gauge(descBlobSize, f.Size, l...)
				gauge(descBlobCached, f.Cached, l...)
				v := int64(0)
				if f.Verified {
					v = 1
				}
				gauge(descBlobVerified, v, l...)
				counter(descBlobFetches, f.Fetches, l...)
				counter(descBlobFetched, f.FetchedBytes, l...)
				counter(descBlobAhead, f.AheadBytes, l...)
				counter(descBlobBackground, f.BackgroundBytes, l...)
				if f.Background != "" {
					gauge(descBlobBgState, 1, append(l, f.Background)...)
				}
			}
		}
	}
	if m.cache != nil {
		gauge(descCacheBytes, m.cache.Bytes())
		gauge(descCacheMax, m.cache.MaxBytes())
	}
	for _, h := range remote.AllHostStats() {
		counter(descHostRequests, h.Requests, h.Host)
		counter(descHostBytes, h.Bytes, h.Host)
		counter(descHostErrors, h.Errors, h.Host)
		counter(descHostRetries, h.Retries, h.Host)
		counter(descHostFallbacks, h.Fallbacks, h.Host)
	}
}

// digestOf is the content digest of a cache identity, "" for a local file.
func digestOf(identity string) string {
	if strings.HasPrefix(identity, "sha256:") {
		return identity
	}
	return ""
}
