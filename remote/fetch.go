package remote

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// client fetches blob ranges of one repository. Clients are shared by every
// Blob of the process with the same repository and options, so they share
// the connection pool, the auth token and the in-flight bounds.
type client struct {
	repo name.Repository
	o    Options
	base http.RoundTripper
	// slots bound the range GETs in flight per class. Each class has its
	// own budget, so a reader's miss never waits for a slot held by
	// readahead or background work.
	slots [numPrios]chan struct{}

	mu sync.Mutex
	hc *http.Client // nil until the first successful auth handshake

	// Endpoints of hosts.toml (mirror.go): mirrors tried before this
	// client; for a mirror client, its Host and shared state.
	mirrors []*client
	host    Host
	state   *hostState
	fills   sync.Map // digest -> *fill (mirror.go)
}

type clientKey struct {
	repo      string
	insecure  bool
	keychain  authn.Keychain
	base      http.RoundTripper
	timeout   time.Duration
	retries   int
	hostsDir  string
	p2p       string
	dragonfly bool
}

var clients = struct {
	sync.Mutex
	m map[clientKey]*client
}{m: map[clientKey]*client{}}

// baseTransport is the HTTP transport under the auth layers.
func baseTransport(o Options) http.RoundTripper {
	if o.Transport != nil {
		return o.Transport
	}
	t := ggcrremote.DefaultTransport.(*http.Transport).Clone()
	t.Proxy, _ = proxyFunc(o.Proxy) // checked by withDefaults
	if o.Insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	return t
}

var defaultBases sync.Map // baseKey -> http.RoundTripper

type baseKey struct {
	insecure bool
	proxy    string
}

func clientFor(repo name.Repository, o Options) (*client, error) {
	base := o.Transport
	if base == nil {
		b, _ := defaultBases.LoadOrStore(baseKey{o.Insecure, o.Proxy}, baseTransport(o))
		base = b.(http.RoundTripper)
	}
	k := clientKey{repo: repo.Name(), insecure: o.Insecure, keychain: o.Keychain, base: base, timeout: o.Timeout, retries: o.Retries,
		hostsDir: o.HostsDir, p2p: o.P2P, dragonfly: o.Dragonfly}
	clients.Lock()
	defer clients.Unlock()
	if c := clients.m[k]; c != nil {
		return c, nil
	}
	c := &client{repo: repo, o: o, base: wrapBlobs(&countingTransport{next: base}, o)}
	c.slots[prioRead] = make(chan struct{}, o.MaxInflight)
	c.slots[prioAhead] = make(chan struct{}, o.MaxInflight)
	c.slots[prioBackground] = make(chan struct{}, backgroundInflight)
	if err := c.setupHosts(o); err != nil {
		return nil, err
	}
	clients.m[k] = c
	return c, nil
}

// prio is the class of a range GET.
type prio int

const (
	prioRead       prio = iota // a reader waits for it
	prioAhead                  // readahead and trace replay: a reader soon will
	prioBackground             // background download of the rest of a blob
	numPrios
)

// backgroundInflight is the GETs in flight for background downloads per
// repository; their rate is bounded separately (Background.MaxMBps).
const backgroundInflight = 2

// acquire takes a slot of class p; release returns it.
func (c *client) acquire(ctx context.Context, p prio) error {
	select {
	case c.slots[p] <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *client) release(p prio) { <-c.slots[p] }

func (c *client) blobURL(digest string) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", c.repo.Scheme(), c.repo.RegistryStr(), c.repo.RepositoryStr(), digest)
}

// httpClient does the auth handshake (ping, token) on first use. A failure
// is not remembered: the registry may be back on the next miss.
func (c *client) httpClient(ctx context.Context) (*http.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hc != nil {
		return c.hc, nil
	}
	auth, err := authn.Resolve(ctx, c.o.Keychain, c.repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", c.repo, err)
	}
	actx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	rt, err := transport.NewWithContext(actx, c.repo.Registry, auth, c.base, []string{c.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", c.repo.RegistryStr(), err)
	}
	c.hc = &http.Client{Transport: transport.NewUserAgent(rt, c.o.UserAgent)}
	return c.hc, nil
}

// retryable marks an attempt failure worth another try; after, if not
// zero, is the server's Retry-After.
type retryable struct {
	err   error
	after time.Duration
}

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// authFailed is a 401/403 from the registry itself (after go-containerregistry's
// transport already fetched a new token once), or a token server refusing
// the credentials: the credentials may have been rotated (ECR's 12-hour
// passwords, a credential helper's short-lived tokens), so the handshake is
// redone once with credentials resolved afresh from the keychain.
type authFailed struct {
	err error
	hc  *http.Client // the client that failed
}

func (a authFailed) Error() string { return a.err.Error() }
func (a authFailed) Unwrap() error { return a.err }

// resetAuth drops hc so the next request resolves credentials and does the
// handshake again (unless another request already replaced it).
func (c *client) resetAuth(hc *http.Client) {
	c.mu.Lock()
	if c.hc == hc {
		c.hc = nil
	}
	c.mu.Unlock()
}

// tries runs op until it succeeds, fails for good or has used up
// Options.Retries. It waits Options.Backoff (times 4 for each further try)
// between tries, or the server's Retry-After if that is longer; a
// Retry-After beyond Options.Timeout is not waited for (Docker Hub's pull
// limit answers hours): the error is returned at once. An authFailed is
// retried once at once, after dropping the cached handshake.
func (c *client) tries(ctx context.Context, op func() error) error {
	reauthed := false
	for try := 0; ; try++ {
		err := op()
		if err == nil {
			return nil
		}
		var af authFailed
		if errors.As(err, &af) && !reauthed && ctx.Err() == nil {
			reauthed = true
			c.resetAuth(af.hc)
			try--
			continue
		}
		var r retryable
		if !errors.As(err, &r) || ctx.Err() != nil || try >= c.o.Retries {
			return err
		}
		countersFor(c.repo.RegistryStr()).retries.Add(1)
		wait := c.o.Backoff << (2 * try)
		if r.after > c.o.Timeout {
			return fmt.Errorf("%w (the server asks to wait %s; not waiting more than %s)", err, r.after, c.o.Timeout)
		}
		wait = max(wait, r.after)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// fetchHere GETs bytes [off, off+n) of a blob of size bytes, tries again on
// transient failures, and hands the body to sink in pieces: sink(p, at)
// receives the bytes at blob offset at. After a failed attempt the next one
// resumes at the first byte sink has not accepted. The range must lie
// inside the blob. When the server ignores Range and sends the whole blob,
// sink is also given the bytes before off (it may keep or drop them).
func (c *client) fetchHere(ctx context.Context, digest string, size, off, n int64, sink func(p []byte, at int64) error, buf []byte) error {
	url := c.blobURL(digest)
	done := int64(0)
	status := 0
	err := c.tries(ctx, func() error {
		got, st, err := c.attempt(ctx, url, size, off+done, n-done, sink, buf)
		done += got
		status = st
		return err
	})
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return &FetchError{URL: url, Off: off, Len: n, Status: status, Err: err}
	}
	return nil
}

// checkStatus turns a failed response into an error of the right kind.
func (c *client) checkStatus(hc *http.Client, resp *http.Response, ok ...int) error {
	err := transport.CheckError(resp, ok...)
	code := resp.StatusCode
	if resp.Request != nil && resp.Request.URL.Host != c.repo.RegistryStr() {
		// The answer came from where the registry redirected us (object
		// storage, a CDN). A pre-signed URL that expired answers 403 (S3,
		// Azure) or 400 (GCS): a new GET at the registry gets a fresh one.
		err = fmt.Errorf("redirected to %s: %w", resp.Request.URL.Host, err)
		if code == http.StatusBadRequest || code == http.StatusUnauthorized || code == http.StatusForbidden {
			return retryable{err: err}
		}
	} else if code == http.StatusUnauthorized || code == http.StatusForbidden {
		return authFailed{err: err, hc: hc}
	}
	if retryStatus(code) {
		return retryable{err: err, after: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return err
}

// retryAfter parses Retry-After: seconds or an HTTP date; 0 if absent or bad.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, 1<<30)) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(time.Until(at), 0)
	}
	return 0
}

// attempt is one range GET. It returns how many bytes of [off, off+n) sink
// accepted. The caller holds a slot (acquire).
func (c *client) attempt(ctx context.Context, url string, size, off, n int64, sink func([]byte, int64) error, buf []byte) (int64, int, error) {
	hc, err := c.httpClient(ctx)
	if err != nil {
		return 0, 0, classify(err)
	}
	actx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, c.classifyDo(hc, err)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != off || end != off+n-1 || total >= 0 && total != size {
			return 0, resp.StatusCode, retryable{err: fmt.Errorf("asked for bytes %d-%d of %d, got Content-Range %q", off, off+n-1, size, resp.Header.Get("Content-Range"))}
		}
	case http.StatusOK:
		// The server ignored Range and sends the whole blob. Its length,
		// when given, must be the blob's (not, say, an HTML page of a proxy).
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			return 0, resp.StatusCode, retryable{err: fmt.Errorf("server ignored Range and sent %d bytes; the blob has %d", resp.ContentLength, size)}
		}
		// Hand over the bytes before ours too (whole chunks from 0): the
		// cache keeps them, so that reads below off do not download the
		// blob from its start again.
		for at := int64(0); at < off; {
			k, err := io.ReadFull(body, buf[:min(int64(len(buf)), off-at)])
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return 0, resp.StatusCode, classify(fmt.Errorf("skipping to byte %d of a whole-blob answer: %w", off, err))
			}
			if err := sink(buf[:k], at); err != nil {
				return 0, resp.StatusCode, err
			}
			at += int64(k)
		}
	default:
		return 0, resp.StatusCode, c.checkStatus(hc, resp, http.StatusPartialContent, http.StatusOK)
	}
	var got int64
	for got < n {
		want := min(int64(len(buf)), n-got)
		k, err := io.ReadFull(body, buf[:want])
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return got, resp.StatusCode, classify(fmt.Errorf("body after %d of %d bytes: %w", got+int64(k), n, err))
		}
		if err := sink(buf[:k], off+got); err != nil {
			return got, resp.StatusCode, err
		}
		got += int64(k)
	}
	return got, resp.StatusCode, nil
}

// classifyDo classifies an error of http.Client.Do: a token server that
// refuses the credentials is an authFailed.
func (c *client) classifyDo(hc *http.Client, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
		return authFailed{err: err, hc: hc}
	}
	return classify(err)
}

func retryStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, 499, 522:
		return true
	}
	return code >= 500 && code != http.StatusNotImplemented && code != http.StatusHTTPVersionNotSupported
}

// classify marks network failures, timeouts and short bodies as retryable;
// a cancelled context is not.
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		if retryStatus(terr.StatusCode) {
			return retryable{err: err}
		}
		return err
	}
	var nerr net.Error
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &nerr) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "connection reset") {
		return retryable{err: err}
	}
	return err
}

// probeHere asks for byte 0 and reads the total from Content-Range, as
// overlaybd's registryfs does (no HEAD).
func (c *client) probeHere(ctx context.Context, digest string) (int64, error) {
	url := c.blobURL(digest)
	var size int64
	err := c.tries(ctx, func() error {
		var err error
		size, err = c.probeOnce(ctx, url, digest)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", url, err)
	}
	return size, nil
}

func (c *client) probeOnce(ctx context.Context, url, digest string) (int64, error) {
	hc, err := c.httpClient(ctx)
	if err != nil {
		return 0, classify(err)
	}
	actx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, c.classifyDo(hc, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || total <= 0 {
			return 0, fmt.Errorf("no blob size in Content-Range %q", resp.Header.Get("Content-Range"))
		}
		return total, nil
	case http.StatusOK:
		if resp.ContentLength > 0 {
			return resp.ContentLength, nil
		}
		// Range ignored and no length (a chunked answer): the size is what
		// the body holds. That costs a whole download, so its digest is
		// checked too: a proxy's error page must not become a size.
		slog.Warn("registry ignores Range and sends no Content-Length; downloading the blob to learn its size", "url", url)
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil {
			return 0, classify(fmt.Errorf("body after %d bytes: %w", n, err))
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
			return 0, fmt.Errorf("the whole-blob answer (%d bytes) hashes to %s: %w", n, got, ErrDigest)
		}
		return n, nil
	}
	return 0, c.checkStatus(hc, resp, http.StatusPartialContent)
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*", then -1).
func parseContentRange(s string) (start, end, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	a, b, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	if start, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
		}
	}
	return start, end, total, nil
}
