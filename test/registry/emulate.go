package registry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// Emulator is an in-process registry (go-containerregistry's, in memory)
// behind a front that behaves the way hosted registries do (Docker Hub,
// GHCR, Harbor, ECR/ACR/GCR), for tests that cannot reach them:
//
//   - every request needs a bearer token (Docker Hub and GHCR ask for one
//     even for anonymous pulls): a 401 carries
//     `WWW-Authenticate: Bearer realm=...,service=...,scope=repository:R:pull`,
//     the token server is a separate host (localhost:PORT, as auth.docker.io
//     is separate from registry-1.docker.io) and grants the scopes asked for,
//     with Basic credentials when User is set;
//   - tokens expire after TokenUses registry requests (then 401 again);
//   - with Redirect, blob GETs and HEADs are answered 307 to an "object
//     store" (a third host) with a pre-signed URL; the store refuses any
//     request carrying Authorization (as S3 does, 400), honours Range, and
//     answers 403 to a URL that has expired (ExpireURLs);
//   - RateLimit answers blob requests 429 with Retry-After, and keeps
//     answering 429 until the time it gave has passed;
//   - with IgnoreRange, blob GETs are answered 200 with the whole body and no
//     Content-Length (chunked), and HEADs carry no Content-Length.
//
// Direct is the same storage without any of this, for pushing content.
// All servers listen on 127.0.0.1.
type Emulator struct {
	Host      string // registry front, 127.0.0.1:PORT
	Direct    string // same storage, no auth or quirks
	TokenHost string // localhost:PORT
	StoreHost string // localhost:PORT

	// Counters.
	TokenFetches   atomic.Int64 // tokens issued
	Unauthorized   atomic.Int64 // 401s sent by the registry front
	BlobGets       atomic.Int64 // blob GETs at the front
	Redirects      atomic.Int64 // 307s sent
	StoreGets      atomic.Int64 // requests at the object store
	StoreAuthSeen  atomic.Int64 // object-store requests that carried Authorization (a leak)
	StoreExpired   atomic.Int64 // 403s for expired URLs
	TooMany        atomic.Int64 // 429s sent
	TooEarly       atomic.Int64 // requests that came before the Retry-After time
	WholeBodies    atomic.Int64 // ranged GETs answered 200 with the whole body
	ScopesAsked    sync.Map     // scope string -> true, as asked of the token server
	inner          http.Handler
	mu             sync.Mutex
	cfg            EmulatorConfig
	tokens         map[string]*token
	urls           map[string]int // signature -> uses left (-1 unlimited)
	expireNext     int            // object-store requests to answer 403
	limitLeft      int            // blob requests still to answer 429
	retryAfter     string         // Retry-After value sent
	limitedUntil   time.Time
	nextID         int
	storeBlobCache map[string][]byte
}

// EmulatorConfig are the emulator's settings (see Configure).
type EmulatorConfig struct {
	User, Password string // "" lets anyone have a token
	TokenUses      int    // registry requests a token is good for (0: unlimited)
	Redirect       bool
	IgnoreRange    bool
	// DenyAnonymous makes anonymous tokens useless (no access), as Docker
	// Hub does for private repositories, even when User is empty.
	DenyAnonymous bool
}

// Configure changes the settings.
func (e *Emulator) Configure(f func(*EmulatorConfig)) {
	e.mu.Lock()
	f(&e.cfg)
	e.mu.Unlock()
}

func (e *Emulator) config() EmulatorConfig {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg
}

type token struct {
	scopes map[string]bool // "repository:R:pull"
	uses   int             // left; <0 unlimited
}

// Emulate starts an emulator; it stops in the test's cleanup.
func Emulate(t testing.TB) *Emulator {
	t.Helper()
	e := &Emulator{
		inner:          ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))),
		tokens:         map[string]*token{},
		urls:           map[string]int{},
		storeBlobCache: map[string][]byte{},
	}
	start := func(h http.Handler, name bool) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		host := strings.TrimPrefix(srv.URL, "http://")
		if name {
			// A DNS name, not an IP literal: go-containerregistry refuses
			// realms on other loopback IPs (SSRF guard), and real token
			// servers and object stores have names.
			host = strings.Replace(host, "127.0.0.1", "localhost", 1)
		}
		return host
	}
	e.Direct = start(e.inner, false)
	e.Host = start(http.HandlerFunc(e.serveRegistry), false)
	e.TokenHost = start(http.HandlerFunc(e.serveToken), true)
	e.StoreHost = start(http.HandlerFunc(e.serveStore), true)
	return e
}

// Ref returns docker://HOST/repoAndTag for the front.
func (e *Emulator) Ref(repoAndTag string) string { return "docker://" + e.Host + "/" + repoAndTag }

// DirectRef is Ref on the unauthenticated side, for pushing.
func (e *Emulator) DirectRef(repoAndTag string) string {
	return "docker://" + e.Direct + "/" + repoAndTag
}

// DockerConfig writes a docker config.json with User/Password for the front
// into a new directory and returns the directory (for DOCKER_CONFIG).
func (e *Emulator) DockerConfig(t testing.TB, user, password string) string {
	dir := t.TempDir()
	e.WriteDockerConfig(t, dir, user, password)
	return dir
}

// WriteDockerConfig (re)writes dir/config.json.
func (e *Emulator) WriteDockerConfig(t testing.TB, dir, user, password string) {
	cfg := `{"auths":{}}`
	if user != "" {
		enc := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
		cfg = fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, e.Host, enc)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ExpireURLs makes the next n object-store requests answer 403 as for an
// expired pre-signed URL.
func (e *Emulator) ExpireURLs(n int) {
	e.mu.Lock()
	e.expireNext = n
	e.mu.Unlock()
}

// RateLimit answers the next n blob requests 429 with Retry-After:
// retryAfter (seconds or an HTTP date), and every blob request until that
// time has passed.
func (e *Emulator) RateLimit(n int, retryAfter string) {
	e.mu.Lock()
	e.limitLeft, e.retryAfter = n, retryAfter
	e.mu.Unlock()
}

// ExpireTokens makes every token issued so far invalid.
func (e *Emulator) ExpireTokens() {
	e.mu.Lock()
	clear(e.tokens)
	e.mu.Unlock()
}

const service = "emulated-registry"

// repoOf extracts REPO of /v2/REPO/{manifests,blobs,tags}/...
func repoOf(path string) (string, string) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return "", ""
	}
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, kind); i > 0 {
			return rest[:i], strings.Trim(kind, "/")
		}
	}
	return "", ""
}

func (e *Emulator) challenge(w http.ResponseWriter, scope string) {
	v := fmt.Sprintf(`Bearer realm="http://%s/token",service="%s"`, e.TokenHost, service)
	if scope != "" {
		v += fmt.Sprintf(`,scope="%s"`, scope)
	}
	w.Header().Set("WWW-Authenticate", v)
	w.Header().Set("Content-Type", "application/json")
	e.Unauthorized.Add(1)
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
}

func (e *Emulator) serveRegistry(w http.ResponseWriter, r *http.Request) {
	repo, kind := repoOf(r.URL.Path)
	scope := ""
	if repo != "" {
		scope = "repository:" + repo + ":pull"
	}
	// Auth: a valid, unexpired bearer token holding the scope.
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	e.mu.Lock()
	tk := e.tokens[tok]
	ok := tk != nil && (scope == "" || tk.scopes[scope])
	if ok && tk.uses > 0 {
		if tk.uses--; tk.uses == 0 {
			delete(e.tokens, tok) // this was its last use
		}
	}
	e.mu.Unlock()
	if !ok || r.Method != http.MethodGet && r.Method != http.MethodHead {
		e.challenge(w, scope)
		return
	}
	if kind != "blobs" {
		e.inner.ServeHTTP(w, r)
		return
	}
	if r.Method == http.MethodGet {
		e.BlobGets.Add(1)
	}
	if e.rateLimited(w) {
		return
	}
	digest := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	cfg := e.config()
	if cfg.Redirect {
		e.mu.Lock()
		e.nextID++
		sig := fmt.Sprintf("sig%d", e.nextID)
		e.urls[sig] = -1
		e.mu.Unlock()
		e.Redirects.Add(1)
		// Docker Hub, ECR and GCR answer 307; some answer 302 or 303.
		http.Redirect(w, r, fmt.Sprintf("http://%s/store/%s?X-Signature=%s&repo=%s", e.StoreHost, digest, sig, repo), http.StatusTemporaryRedirect)
		return
	}
	if cfg.IgnoreRange {
		e.serveWhole(w, r, repo, digest)
		return
	}
	e.inner.ServeHTTP(w, r)
}

// rateLimited answers 429 while a limit is in force.
func (e *Emulator) rateLimited(w http.ResponseWriter) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if now.Before(e.limitedUntil) {
		e.TooEarly.Add(1)
	} else if e.limitLeft == 0 {
		return false
	} else {
		e.limitLeft--
		d := time.Second
		if s, err := strconv.Atoi(e.retryAfter); err == nil {
			d = time.Duration(s) * time.Second
		} else if at, err := http.ParseTime(e.retryAfter); err == nil {
			d = time.Until(at)
		}
		e.limitedUntil = now.Add(d)
	}
	e.TooMany.Add(1)
	w.Header().Set("Retry-After", e.retryAfter)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	fmt.Fprint(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}`)
	return true
}

// blob reads a whole blob from the storage.
func (e *Emulator) blob(repo, digest string) ([]byte, bool) {
	e.mu.Lock()
	b, ok := e.storeBlobCache[digest]
	e.mu.Unlock()
	if ok {
		return b, true
	}
	rec := httptest.NewRecorder()
	e.inner.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/"+repo+"/blobs/"+digest, nil))
	if rec.Code != http.StatusOK {
		return nil, false
	}
	b = rec.Body.Bytes()
	e.mu.Lock()
	e.storeBlobCache[digest] = b
	e.mu.Unlock()
	return b, true
}

// serveWhole ignores Range: 200, the whole body, no Content-Length.
func (e *Emulator) serveWhole(w http.ResponseWriter, r *http.Request, repo, digest string) {
	b, ok := e.blob(repo, digest)
	if !ok {
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Docker-Content-Digest", digest)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return // Go sends no Content-Length for an empty HEAD answer
	}
	if r.Header.Get("Range") != "" {
		e.WholeBodies.Add(1)
	}
	// Flushing before the end makes the answer chunked: no Content-Length.
	for len(b) > 0 {
		k := min(len(b), 32<<10)
		if _, err := w.Write(b[:k]); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		b = b[k:]
	}
}

func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("service") != service {
		http.Error(w, `{"details":"unknown service"}`, http.StatusBadRequest)
		return
	}
	cfg := e.config()
	user, pw, hasBasic := r.BasicAuth()
	granted := true
	if hasBasic && (user != cfg.User || pw != cfg.Password || cfg.User == "") {
		// Wrong credentials: the token server refuses.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"details":"incorrect username or password"}`)
		return
	}
	if !hasBasic && (cfg.User != "" || cfg.DenyAnonymous) {
		granted = false // Docker Hub hands out a token with no access
	}
	tk := &token{scopes: map[string]bool{}, uses: -1}
	if cfg.TokenUses > 0 {
		tk.uses = cfg.TokenUses
	}
	for _, s := range q["scope"] {
		// A scope may hold several actions ("pull,push"); grant pull only.
		e.ScopesAsked.Store(s, true)
		parts := strings.Split(s, ":")
		if len(parts) == 3 && parts[0] == "repository" && granted && strings.Contains(parts[2], "pull") {
			tk.scopes["repository:"+parts[1]+":pull"] = true
		}
	}
	e.mu.Lock()
	e.nextID++
	id := fmt.Sprintf("tok%d", e.nextID)
	e.tokens[id] = tk
	e.mu.Unlock()
	e.TokenFetches.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token": id, "access_token": id, "expires_in": 300,
		"issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}

// serveStore is the object store behind redirects.
func (e *Emulator) serveStore(w http.ResponseWriter, r *http.Request) {
	e.StoreGets.Add(1)
	if r.Header.Get("Authorization") != "" {
		// S3's answer to a pre-signed URL plus an Authorization header.
		e.StoreAuthSeen.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>`)
		return
	}
	digest, _ := strings.CutPrefix(r.URL.Path, "/store/")
	sig := r.URL.Query().Get("X-Signature")
	e.mu.Lock()
	left, known := e.urls[sig]
	expired := !known || left == 0 || e.expireNext > 0
	if e.expireNext > 0 {
		e.expireNext--
	}
	if !expired && left > 0 {
		e.urls[sig] = left - 1
	}
	e.mu.Unlock()
	if expired {
		e.StoreExpired.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`)
		return
	}
	b, ok := e.blob(r.URL.Query().Get("repo"), digest)
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	// ServeContent honours Range (206 + Content-Range, 416 past the end).
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}
