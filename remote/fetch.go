package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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
// the connection pool, the auth token and the in-flight bound.
type client struct {
	repo name.Repository
	o    Options
	base http.RoundTripper
	sem  chan struct{}

	mu sync.Mutex
	hc *http.Client // nil until the first successful auth handshake
}

type clientKey struct {
	repo     string
	insecure bool
	keychain authn.Keychain
	base     http.RoundTripper
	timeout  time.Duration
	retries  int
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
	if o.Insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	return t
}

var defaultBases sync.Map // bool (insecure) -> http.RoundTripper

func clientFor(repo name.Repository, o Options) *client {
	base := o.Transport
	if base == nil {
		b, _ := defaultBases.LoadOrStore(o.Insecure, baseTransport(o))
		base = b.(http.RoundTripper)
	}
	k := clientKey{repo: repo.Name(), insecure: o.Insecure, keychain: o.Keychain, base: base, timeout: o.Timeout, retries: o.Retries}
	clients.Lock()
	defer clients.Unlock()
	if c := clients.m[k]; c != nil {
		return c
	}
	c := &client{repo: repo, o: o, base: base, sem: make(chan struct{}, o.MaxInflight)}
	clients.m[k] = c
	return c
}

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

// errRetry marks an attempt failure worth another try.
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// fetch GETs bytes [off, off+n) of a blob, tries again on transient
// failures, and hands the body to sink in pieces: sink(p, at) receives the
// bytes at blob offset at. After a failed attempt the next one resumes at
// the first byte sink has not accepted. The range must lie inside the blob.
func (c *client) fetch(ctx context.Context, digest string, off, n int64, sink func(p []byte, at int64) error, buf []byte) error {
	url := c.blobURL(digest)
	done := int64(0)
	var last error
	status := 0
	for try := 0; ; try++ {
		if try > 0 {
			wait := c.o.Backoff << (2 * (try - 1))
			select {
			case <-ctx.Done():
				return &FetchError{URL: url, Off: off, Len: n, Err: ctx.Err()}
			case <-time.After(wait):
			}
		}
		var got int64
		got, status, last = c.attempt(ctx, url, off+done, n-done, sink, buf)
		done += got
		if last == nil {
			return nil
		}
		var r retryable
		if !errors.As(last, &r) || ctx.Err() != nil || try >= c.o.Retries {
			return &FetchError{URL: url, Off: off, Len: n, Status: status, Err: last}
		}
	}
}

// attempt is one range GET. It returns how many bytes sink accepted.
func (c *client) attempt(ctx context.Context, url string, off, n int64, sink func([]byte, int64) error, buf []byte) (int64, int, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	defer func() { <-c.sem }()
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
		return 0, 0, classify(err)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, _, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != off || end != off+n-1 {
			return 0, resp.StatusCode, retryable{fmt.Errorf("asked for bytes %d-%d, got Content-Range %q", off, off+n-1, resp.Header.Get("Content-Range"))}
		}
	case http.StatusOK:
		// The server ignored Range: skip to our bytes.
		if _, err := io.CopyN(io.Discard, body, off); err != nil {
			return 0, resp.StatusCode, classify(err)
		}
	default:
		err := transport.CheckError(resp, http.StatusPartialContent, http.StatusOK)
		if retryStatus(resp.StatusCode) {
			err = retryable{err}
		}
		return 0, resp.StatusCode, err
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
			return retryable{err}
		}
		return err
	}
	var nerr net.Error
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &nerr) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "connection reset") {
		return retryable{err}
	}
	return err
}

// probeSize asks for byte 0 and reads the total from Content-Range, as
// overlaybd's registryfs does (no HEAD).
func (c *client) probeSize(ctx context.Context, digest string) (int64, error) {
	url := c.blobURL(digest)
	var last error
	for try := 0; try <= c.o.Retries; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(c.o.Backoff << (2 * (try - 1))):
			}
		}
		size, err := c.probeOnce(ctx, url)
		if err == nil {
			return size, nil
		}
		last = err
		var r retryable
		if !errors.As(err, &r) {
			break
		}
	}
	return 0, fmt.Errorf("size of %s: %w", url, last)
}

func (c *client) probeOnce(ctx context.Context, url string) (int64, error) {
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
		return 0, classify(err)
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
		return 0, fmt.Errorf("server ignored Range and sent no Content-Length")
	}
	err = transport.CheckError(resp, http.StatusPartialContent)
	if retryStatus(resp.StatusCode) {
		return 0, retryable{err}
	}
	return 0, err
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
