package remote

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/proctest"
	"github.com/obdfs/obdfs/test/registry"
)

func TestNoProxy(t *testing.T) {
	for _, tc := range []struct {
		list, host string
		want       bool
	}{
		{"", "r.io", false},
		{"*", "r.io:443", true},
		{"r.io", "r.io:5000", true},
		{"r.io", "sub.r.io", true},
		{".r.io", "sub.r.io", true},
		{"r.io", "xr.io", false},
		{"r.io:5000", "r.io:5001", false},
		{"r.io:5000", "r.io:5000", true},
		{"10.0.0.0/8, 127.0.0.1", "10.1.2.3:80", true},
		{"10.0.0.0/8", "11.1.2.3:80", false},
		{"127.0.0.1", "127.0.0.1:5000", true},
		{"::1", "[::1]:5000", true},
		{"localhost", "127.0.0.1:5000", false},
	} {
		if got := noProxy(tc.list, tc.host); got != tc.want {
			t.Errorf("noProxy(%q, %q) = %v", tc.list, tc.host, got)
		}
	}
	if _, err := proxyFunc("ftp://p:1"); err == nil {
		t.Error("ftp:// proxy accepted")
	}
	if _, err := p2pAddress("localhost:19145/dadip2p"); err != nil {
		t.Errorf("overlaybd's example P2P address: %v", err)
	}
}

// startTinyproxy runs Debian's tinyproxy on loopback and returns its
// address and log file.
func startTinyproxy(t *testing.T) (string, string) {
	t.Helper()
	needs.Commands(t, "tinyproxy")
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logf := filepath.Join(dir, "tinyproxy.log")
	cfg := filepath.Join(dir, "tinyproxy.conf")
	conf := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 60\nLogFile %q\nLogLevel Info\nMaxClients 64\nAllow 127.0.0.1\nDisableViaHeader Yes\n", port, logf)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", cfg)
	out, _ := os.Create(filepath.Join(dir, "stderr"))
	cmd.Stdout, cmd.Stderr = out, out
	p, err := proctest.Start(cmd)
	out.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(5 * time.Second) })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, logf
		}
		select {
		case <-p.Exited():
			b, _ := os.ReadFile(filepath.Join(dir, "stderr"))
			lb, _ := os.ReadFile(logf)
			t.Fatalf("tinyproxy exited:\n%s\n%s", b, lb)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("tinyproxy does not listen after 10s")
		}
	}
}

// TestProxy reads the stack from the emulated registry (bearer tokens from a
// separate host, blob GETs redirected to an object store) through a real
// forward proxy: its log shows the registry, the token server and the
// redirected blob URLs went through it.
func TestProxy(t *testing.T) {
	proxy, logf := startTinyproxy(t)
	e := emulated(t, registry.EmulatorConfig{Redirect: true})
	o := testOptions(t)
	o.Proxy = "http://" + proxy
	readStack(t, e.Ref(stackRepo+":v1"), o)
	b, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, host := range []string{e.Host, e.TokenHost, e.StoreHost} {
		if !strings.Contains(log, "http://"+host+"/") {
			t.Errorf("tinyproxy's log has no request to %s", host)
		}
	}
	if !strings.Contains(log, "http://"+e.Host+"/v2/"+stackRepo+"/blobs/sha256:") {
		b2, _ := os.ReadFile(filepath.Join(filepath.Dir(logf), "stderr"))
		t.Errorf("no blob GET through the proxy:\n%s\n%s", log, b2)
	}
	if n := e.Redirects.Load(); n == 0 {
		t.Error("no redirect to the object store happened")
	}
}

// p2pAgent is a prefix-forwarding server as overlaybd's P2P mode expects:
// GET /PREFIX/<URL> fetches URL (headers kept, redirects passed back).
type p2pAgent struct {
	prefix string
	mu     sync.Mutex
	urls   []string
	prios  map[string]int
}

func (a *p2pAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target, ok := strings.CutPrefix(r.URL.Path, a.prefix+"/")
	if !ok || !strings.HasPrefix(target, "http://") {
		http.Error(w, "not a P2P URL: "+r.URL.Path, http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.urls = append(a.urls, target)
	a.prios[r.Header.Get("X-Dragonfly-Priority")]++
	a.mu.Unlock()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// TestP2P: overlaybd's P2P mode against a prefix-forwarding agent, with
// Dragonfly's headers on: every blob GET reaches the agent as the
// registry's blob URL (never the object store's signed one it redirects
// to), with a priority; manifests and tokens do not go through it.
func TestP2P(t *testing.T) {
	e := emulated(t, registry.EmulatorConfig{Redirect: true})
	agent := &p2pAgent{prefix: "/dadip2p", prios: map[string]int{}}
	srv := httptest.NewServer(agent)
	defer srv.Close()
	o := testOptions(t)
	o.P2P = strings.TrimPrefix(srv.URL, "http://") + "/dadip2p" // no scheme, as overlaybd's example
	o.Dragonfly = true
	readStack(t, e.Ref(stackRepo+":v1"), o)
	agent.mu.Lock()
	defer agent.mu.Unlock()
	if len(agent.urls) == 0 {
		t.Fatal("no request reached the P2P agent")
	}
	for _, u := range agent.urls {
		if !strings.HasPrefix(u, "http://"+e.Host+"/v2/"+stackRepo+"/blobs/sha256:") {
			t.Errorf("P2P agent asked for %s, want registry blob URLs only", u)
		}
	}
	if agent.prios["6"] == 0 || agent.prios[""] != 0 {
		t.Errorf("X-Dragonfly-Priority values seen: %v", agent.prios)
	}
	t.Logf("%d blob GETs through the agent, priorities %v; %d redirects", len(agent.urls), agent.prios, e.Redirects.Load())
}
