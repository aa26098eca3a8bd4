package remote

import (
	testdata "github.com/obdfs/obdfs/internal/fixture"

	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/internal/testlayer"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
)

// Expected content of the fixture stacks (oracle README).
const (
	sumLayer1 = "3a8114c638a5bd9111d70a534daf9e37128b775614357a32ef389785f434d81f"
	sumStack  = "b2315973658f86ec78a1431df439b451b12dd0bad74a39dfd3de10087d63b4e7"
)

// stackFiles is the 3-layer oracle stack with a ZFile bottom.
var stackFiles = []string{"b/base.lz4.zfile", "d/l2.lsmt", "d/l3.lsmt"}

func fixture(t testing.TB, rel string) string {
	t.Helper()
	return testdata.Oracle(t, rel)
}

func fixtures(t testing.TB, rels ...string) []string {
	var out []string
	for _, r := range rels {
		out = append(out, fixture(t, r))
	}
	return out
}

// wrappedSum is the digest push gives a bare layer file.
func wrappedSum(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(testlayer.TarWrap(b, 0o644))
	return "sha256:" + hex.EncodeToString(h[:])
}

func testOptions(t testing.TB) Options {
	return Options{
		CacheDir: t.TempDir(),
		Keychain: authn.NewMultiKeychain(), // anonymous
		Timeout:  5 * time.Second,
		Backoff:  time.Millisecond,
	}
}

func blobSum(t testing.TB, b *Blob) string {
	t.Helper()
	h := sha256.New()
	// Odd piece sizes so reads straddle chunks.
	buf := make([]byte, 100_003)
	for off := int64(0); off < b.Size(); {
		n, err := b.ReadAt(buf, off)
		h.Write(buf[:n])
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("ReadAt %d: %v", off, err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// openStack stacks blobs the way image.Open does (layerfile.OpenLayer: tar,
// ZFile, LSMT). A blob is an Invalidator, so the ZFile reader heals a block
// that fails its CRC by refetching it once.
func openStack(t testing.TB, blobs []*Blob) (*lsmt.Stack, error) {
	t.Helper()
	var files []*lsmt.File
	for _, b := range blobs {
		f, err := layerfile.OpenLayer(b, b.Size(), layerfile.Options{Name: b.Name()})
		if err != nil {
			return nil, err
		}
		files = append(files, f.LSMT)
	}
	return lsmt.NewStack(files, nil)
}

func diskSum(r io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if err != nil && err != io.EOF {
			return "", err
		}
		h.Write(buf[:n])
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fault is a misbehaving front of a registry: it acts on ranged blob GETs.
type fault struct {
	next http.Handler

	mu      sync.Mutex
	mode    string // "", "cut", "500", "stall", "wrong", "norange"
	times   int    // how many requests to spoil; <0 = all
	stall   time.Duration
	latency time.Duration // added to every blob GET (one RTT)

	gets     atomic.Int64 // ranged blob GETs seen
	inflight atomic.Int64
	maxIn    atomic.Int64
	ranges   sync.Map // "Range" header -> count
}

func (f *fault) set(mode string, times int) {
	f.mu.Lock()
	f.mode, f.times = mode, times
	f.mu.Unlock()
}

func (f *fault) take() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode == "" || f.times == 0 {
		return ""
	}
	if f.times > 0 {
		f.times--
	}
	return f.mode
}

func (f *fault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") || r.Header.Get("Range") == "" {
		f.next.ServeHTTP(w, r)
		return
	}
	f.gets.Add(1)
	in := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxIn.Load()
		if in <= m || f.maxIn.CompareAndSwap(m, in) {
			break
		}
	}
	rg := r.Header.Get("Range")
	v, _ := f.ranges.LoadOrStore(rg, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	if f.latency > 0 {
		time.Sleep(f.latency)
	}
	switch f.take() {
	case "500":
		http.Error(w, "injected", http.StatusInternalServerError)
		return
	case "stall":
		select {
		case <-time.After(f.stall):
		case <-r.Context().Done():
		}
		return
	case "norange":
		r.Header.Del("Range")
		f.next.ServeHTTP(w, r)
		return
	case "cut":
		rec := httptest.NewRecorder()
		f.next.ServeHTTP(rec, r)
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	case "wrong":
		rec := httptest.NewRecorder()
		f.next.ServeHTTP(rec, r)
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		body := rec.Body.Bytes()
		for i := len(body) / 3; i < len(body)/3+64 && i < len(body); i++ {
			body[i] ^= 0x5a
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
		return
	}
	f.next.ServeHTTP(w, r)
}

// inproc starts go-containerregistry's registry behind a fault handler.
func inproc(t testing.TB) (host string, f *fault) {
	t.Helper()
	f = &fault{next: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), f
}

func mustPush(t testing.TB, ref string, files []string, o Options) string {
	t.Helper()
	d, err := Push(context.Background(), ref, files, PushOptions{Options: o})
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return d
}

// putBlob writes data as an uncompressed layer blob to host/repo and returns
// its digest.
func putBlob(t testing.TB, host, repo string, data []byte) string {
	t.Helper()
	l := static.NewLayer(data, types.OCIUncompressedLayer)
	r, err := name.NewRepository(host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcrremote.WriteLayer(r, l); err != nil {
		t.Fatal(err)
	}
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// resolveFirst resolves ref and returns its first (bottom) layer blob.
func resolveFirst(t testing.TB, ref string, o Options) *Blob {
	t.Helper()
	bs, err := Resolve(context.Background(), ref, o)
	if err != nil {
		t.Fatal(err)
	}
	return bs[0]
}

func closeBlobs(t testing.TB, bs []*Blob) {
	for _, b := range bs {
		if err := b.Close(); err != nil {
			t.Errorf("close %s: %v", b.Name(), err)
		}
	}
}

func readAll(b *Blob) ([]byte, error) {
	var buf bytes.Buffer
	_, err := io.Copy(&buf, io.NewSectionReader(b, 0, b.Size()))
	return buf.Bytes(), err
}

var _ = fmt.Sprintf
