package remote

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obdfs/obdfs/internal/testlayer"
	"github.com/obdfs/obdfs/test/registry"
)

func TestParseHosts(t *testing.T) {
	yes := true
	tests := []struct {
		name, ns, file string
		want           []Host
		err            string
	}{
		{name: "empty", ns: "docker.io", file: ``, want: []Host{
			{Scheme: "https", Host: "registry-1.docker.io", Path: "/v2", Pull: true, Resolve: true}}},
		{name: "mirrors in file order", ns: "10.0.0.1:5000", file: `
server = "https://10.0.0.1:5000"
[host."http://zz-mirror:5000"]
  capabilities = ["pull"]
[host."https://aa-mirror/prefix"]
  capabilities = ["pull", "resolve"]
  ca = "ca.pem"
  client = [["c.cert", "/abs/c.key"], "both.pem"]
  skip_verify = true
  dial_timeout = "2s"
  [host."https://aa-mirror/prefix".header]
    X-Tag = "a"
    X-Many = ["1", "2"]
[host."https://custom/api/root"]
  override_path = true
`, want: []Host{
			{Scheme: "http", Host: "zz-mirror:5000", Path: "/v2", Pull: true},
			{Scheme: "https", Host: "aa-mirror", Path: "/prefix/v2", Pull: true, Resolve: true,
				CA: []string{"/d/ca.pem"}, Client: [][2]string{{"/d/c.cert", "/abs/c.key"}, {"/d/both.pem", ""}},
				SkipVerify: &yes, DialTimeout: 2 * time.Second,
				Header: http.Header{"X-Tag": {"a"}, "X-Many": {"1", "2"}}},
			{Scheme: "https", Host: "custom", Path: "/api/root", Pull: true, Resolve: true},
			{Scheme: "https", Host: "10.0.0.1:5000", Path: "/v2", Pull: true, Resolve: true},
		}},
		{name: "server without scheme, ca list", ns: "r.io", file: `server = "other.io"
ca = ["/a.pem", "b.pem"]`, want: []Host{
			{Scheme: "https", Host: "other.io", Path: "/v2", Pull: true, Resolve: true, CA: []string{"/a.pem", "/d/b.pem"}}}},
		{name: "bad capability", ns: "r.io", file: `[host."m"]
capabilities = ["pull", "fly"]`, err: `unknown capability "fly"`},
		{name: "bad ca type", ns: "r.io", file: `ca = 3`, err: "ca: want a string"},
		{name: "bad client pair", ns: "r.io", file: `client = [["a", "b", "c"]]`, err: "client pair has 3 entries"},
		{name: "bad header", ns: "r.io", file: `[header]
X = 1`, err: "header X"},
		{name: "bad dial timeout", ns: "r.io", file: `dial_timeout = "soon"`, err: "dial_timeout"},
		{name: "bad toml", ns: "r.io", file: "\n[host.\"m\"", err: "TOML syntax, line 2"},
		{name: "url with user", ns: "r.io", file: `server = "https://u:p@r.io"`, err: "want [http[s]://]HOST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHosts("/d", tt.ns, []byte(tt.file))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestLoadHosts(t *testing.T) {
	root := t.TempDir()
	write := func(rel, data string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("r.io_5000_/hosts.toml", `[host."http://m1"]`)
	write("certs.io/ca.crt", "")
	write("certs.io/me.cert", "")
	write("certs.io/me.key", "")
	write("_default/hosts.toml", `[host."http://fallback"]`)
	write("broken.io/hosts.toml", `capabilities = "pull"`)
	for _, tt := range []struct {
		ns    string
		hosts []string
		err   string
	}{
		{ns: "r.io:5000", hosts: []string{"m1", "r.io:5000"}},
		{ns: "certs.io", hosts: []string{"certs.io"}},
		{ns: "other.io", hosts: []string{"fallback", "other.io"}},
		{ns: "broken.io", err: filepath.Join(root, "broken.io", "hosts.toml")},
	} {
		hs, err := LoadHosts(root, tt.ns)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want one naming %s", tt.ns, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.ns, err)
		}
		var names []string
		for _, h := range hs {
			names = append(names, h.Host)
		}
		if !reflect.DeepEqual(names, tt.hosts) {
			t.Errorf("%s: hosts %v, want %v", tt.ns, names, tt.hosts)
		}
		if tt.ns == "certs.io" && (len(hs[0].CA) != 1 || len(hs[0].Client) != 1 || hs[0].Client[0][1] == "") {
			t.Errorf("certs.io: Docker-style certificate files not found: %+v", hs[0])
		}
	}
	if hs, err := LoadHosts(filepath.Join(root, "none"), "r.io"); hs != nil || err != nil {
		t.Errorf("missing root: %v, %v", hs, err)
	}
}

func FuzzParseHosts(f *testing.F) {
	f.Add(`server = "https://r.io"
capabilities = ["pull", "resolve"]
[host."http://m:5000"]
  capabilities = ["pull"]
  ca = ["a.pem"]
  client = [["c", "k"], "b"]
  skip_verify = true
  override_path = true
  dial_timeout = "1s"
  [host."http://m:5000".header]
    X = ["1", "2"]
`)
	f.Add(`[host."a"]
[host."a".header]
[host."b"]`)
	f.Fuzz(func(t *testing.T, s string) {
		hs, err := ParseHosts("/d", "r.io", []byte(s))
		if err != nil {
			return
		}
		if len(hs) == 0 {
			t.Fatal("no endpoint and no error")
		}
		for _, h := range hs {
			if h.Host == "" || (h.Scheme != "http" && h.Scheme != "https") {
				t.Fatalf("bad endpoint %+v", h)
			}
		}
	})
}

// countingProxy forwards to host and counts the blob bytes it sends back.
type countingProxy struct {
	rp        *httputil.ReverseProxy
	blobBytes atomic.Int64
	blobGets  atomic.Int64
	inflight  sync.WaitGroup
}

// settled returns the blob bytes sent once no request is in flight (the
// GETs of closed blobs finish after their readers are gone).
func (p *countingProxy) settled() int64 {
	p.inflight.Wait()
	return p.blobBytes.Load()
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

func (w countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (p *countingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.inflight.Add(1)
	defer p.inflight.Done()
	if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
		p.blobGets.Add(1)
		var n atomic.Int64
		w = countingWriter{w, &n}
		p.rp.ServeHTTP(w, r)
		p.blobBytes.Add(n.Load())
		return
	}
	p.rp.ServeHTTP(w, r)
}

func startCounting(t testing.TB, host string) (string, *countingProxy) {
	u, _ := url.Parse("http://" + host)
	p := &countingProxy{rp: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), p
}

// deadMirror accepts connections and never answers.
func deadMirror(t testing.TB) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String(), &n
}

// writeHosts writes certs.d/<ns>/hosts.toml and returns certs.d.
func writeHosts(t testing.TB, ns, toml string) string {
	root := t.TempDir()
	dir := filepath.Join(root, strings.ReplaceAll(ns, ":", "_")+"_")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestMirrors puts Debian's docker-registry as a pull-through cache in front
// of the origin registry, behind a mirror that answers wrong Content-Ranges
// and a dead one (accepts, never answers): the stack reads right, the broken
// and dead mirrors are tried once (then cooled down), and a second node with
// its own cache reads everything from the mirror, nothing from the origin.
func TestMirrors(t *testing.T) {
	files := fixtures(t, stackFiles...)
	origin := registry.Start(t, false)
	counted, cp := startCounting(t, origin.Host)
	mirror := registry.StartMirror(t, counted)
	dead, deadConns := deadMirror(t)
	var brokenGets atomic.Int64
	var sawHeader atomic.Bool
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Obdfs-Test") == "yes" {
			sawHeader.Store(true)
		}
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(r.URL.Path, "/blobs/"):
			brokenGets.Add(1)
			w.Header().Set("Content-Range", "bytes 0-9/10")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(make([]byte, 10))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(broken.Close)
	ref := origin.Ref("obdfs/stack:v1")
	o := testOptions(t)
	mustPush(t, ref, files, o)

	o.Timeout = time.Second
	o.HostsDir = writeHosts(t, origin.Host, fmt.Sprintf(`server = "http://%s"
[host."http://%s"]
  capabilities = ["pull", "resolve"]
  [host."http://%s".header]
    X-Obdfs-Test = "yes"
[host."http://%s"]
  capabilities = ["pull", "resolve"]
[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, origin.Host, strings.TrimPrefix(broken.URL, "http://"), strings.TrimPrefix(broken.URL, "http://"), dead, mirror.Host))
	read := func(o Options) {
		t.Helper()
		blobs, err := Resolve(context.Background(), ref, o)
		if err != nil {
			t.Fatal(err)
		}
		defer closeBlobs(t, blobs)
		s, err := openStack(t, blobs)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := diskSum(s, s.Size()); err != nil || got != sumStack {
			t.Fatalf("stack content %s (err %v), want %s", got, err, sumStack)
		}
	}
	read(o)
	if n := deadConns.Load(); n == 0 || n > 2 {
		t.Errorf("dead mirror: %d connections, want 1 or 2 (one ping, then the cooldown)", n)
	}
	if n := brokenGets.Load(); n != 1 {
		t.Errorf("broken mirror: %d blob GETs, want 1 (then the cooldown)", n)
	}
	if !sawHeader.Load() {
		t.Error("the [header] of hosts.toml was not sent")
	}
	first := cp.blobBytes.Load()
	t.Logf("node 1: origin sent %d blob bytes to the mirror", first)

	o2 := o
	o2.CacheDir = t.TempDir()
	read(o2)
	if extra := cp.blobBytes.Load() - first; extra != 0 {
		t.Errorf("node 2 (own cache): the origin sent %d more blob bytes; want all from the mirror", extra)
	}
}

// TestMirrorFleet starts N=4 nodes (own caches and clients) at once on the
// same 32 MiB blob behind a cold pull-through mirror (docker-registry in
// proxy mode) and reports the bytes the origin sent as a multiple of the
// blob's size (docs/PERFORMANCE.md, "Fleets"), and the time against the same
// nodes without the mirror. It asserts only that the mirror saved origin
// traffic; the figures are in the log (go test -v -run TestMirrorFleet).
func TestMirrorFleet(t *testing.T) {
	const nodes = 4
	size := 32 << 20
	if mb, err := strconv.Atoi(os.Getenv("FLEET_BLOB_MB")); err == nil && mb > 0 {
		size = mb << 20 // for docs/PERFORMANCE.md
	}
	origin := registry.Start(t, false)
	counted, cp := startCounting(t, origin.Host)
	mirror := registry.StartMirror(t, counted)
	data := testlayer.Random(3, size)
	dig := putBlob(t, origin.Host, "fleet/blob", data)
	hostsDir := writeHosts(t, counted, fmt.Sprintf(`[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, mirror.Host))
	run := func(hostsDir string) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for i := 0; i < nodes; i++ {
			o := testOptions(t) // own cache dir and keychain, so own client
			// Options.Timeout also bounds how long a node waits for the cold
			// mirror to finish filling the blob before it reads from the
			// origin instead; on a loaded machine the fill of 32 MiB
			// through docker-registry can outlast testOptions' 5 s, and
			// every node then reads it all from the origin ("the mirror
			// saved nothing", as with a 300 ms timeout here).
			o.Timeout = time.Minute
			o.HostsDir = hostsDir
			wg.Go(func() {
				b, err := OpenBlob(context.Background(), "http://"+counted+"/v2/fleet/blob/blobs", dig, int64(size), o)
				if err != nil {
					t.Error(err)
					return
				}
				defer b.Close()
				// Four readers per node, each a quarter in 1 MiB reads.
				var rw sync.WaitGroup
				for r := range 4 {
					rw.Go(func() {
						p := make([]byte, 1<<20)
						for off := int64(r*size) / 4; off < int64((r+1)*size)/4; off += int64(len(p)) {
							if _, err := b.ReadAt(p, off); err != nil {
								t.Errorf("node %d: %v", i, err)
								return
							}
							if !bytes.Equal(p, data[off:off+int64(len(p))]) {
								t.Errorf("node %d: wrong bytes at %d", i, off)
								return
							}
						}
					})
				}
				rw.Wait()
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	before := cp.settled()
	direct := run("")
	directBytes := cp.settled() - before
	before = cp.settled()
	mirrored := run(hostsDir)
	viaMirror := cp.settled() - before
	t.Logf("origin blob GETs: %d", cp.blobGets.Load())
	t.Logf("%d nodes, %d-byte blob: without mirror the origin sent %d bytes (%.3fx) in %v; through the cold mirror %d (%.3fx) in %v",
		nodes, size, directBytes, float64(directBytes)/float64(size), direct.Round(time.Millisecond),
		viaMirror, float64(viaMirror)/float64(size), mirrored.Round(time.Millisecond))
	if viaMirror >= directBytes {
		t.Errorf("the mirror saved nothing: origin sent %d bytes through it, %d without", viaMirror, directBytes)
	}
}

// TestMirrorTLSOverridePath: a mirror on HTTPS (its certificate trusted
// through hosts.toml's ca, not the system pool; it requires the client
// certificate of hosts.toml's client pair) whose API root is a path of its
// own (override_path), in front of the in-process registry.
func TestMirrorTLSOverridePath(t *testing.T) {
	files := fixtures(t, stackFiles...)
	origin, _ := inproc(t)
	ref := "docker://" + origin + "/obdfs/stack:v1"
	o := testOptions(t)
	mustPush(t, ref, files, o)
	up, _ := url.Parse("http://" + origin)
	rp := httputil.NewSingleHostReverseProxy(up)
	var mu sync.Mutex
	paths := map[string]int{}
	mirror := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/api/root")
		if !ok {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		kind := "other"
		if strings.Contains(rest, "/blobs/") {
			kind = "blob"
		} else if strings.Contains(rest, "/manifests/") {
			kind = "manifest"
		}
		paths[kind]++
		mu.Unlock()
		r.URL.Path = "/v2" + rest
		rp.ServeHTTP(w, r)
	}))
	mirror.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below
	clientPEM, keyPEM, clientCert := clientCertificate(t)
	pool := x509.NewCertPool()
	pool.AddCert(clientCert)
	mirror.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	mirror.StartTLS()
	defer mirror.Close()
	dir := t.TempDir()
	pemCA := pemCert(mirror.Certificate().Raw)
	hosts := writeHosts(t, origin, fmt.Sprintf(`[host."%s/api/root"]
  override_path = true
  ca = "%s"
  client = [["%s", "%s"]]
`, mirror.URL, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key")))
	for name, b := range map[string][]byte{"ca.pem": pemCA, "c.pem": clientPEM, "c.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o.HostsDir = hosts
	o.CacheDir = t.TempDir()
	readStack(t, ref, o)
	mu.Lock()
	defer mu.Unlock()
	if paths["blob"] == 0 || paths["manifest"] == 0 {
		t.Errorf("requests at the mirror's API root: %v; want manifests and blobs", paths)
	}

	// Without the ca the mirror's certificate is refused and the registry serves.
	if err := os.WriteFile(filepath.Join(hosts, strings.ReplaceAll(origin, ":", "_")+"_", "hosts.toml"),
		[]byte(fmt.Sprintf("[host.%q]\n  override_path = true\n", mirror.URL+"/api/root")), 0o644); err != nil {
		t.Fatal(err)
	}
	before := paths["blob"]
	mu.Unlock()
	o2 := o
	o2.CacheDir = t.TempDir()
	o2.Timeout = 4 * time.Second // another client key: hosts.toml is read again
	readStack(t, ref, o2)
	mu.Lock()
	if paths["blob"] != before {
		t.Errorf("a mirror with an untrusted certificate served %d blob GETs", paths["blob"]-before)
	}
}

// clientCertificate makes a self-signed client certificate and its key.
func clientCertificate(t *testing.T) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "obdfs-test-client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	return pemCert(der), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), cert
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
