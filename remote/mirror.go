package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Mirror fallback. A namespace configured in hosts.toml has mirrors tried in
// order before the registry itself. A mirror that fails (connection error,
// timeout, 5xx, a Range it ignored or answered wrongly) is put in a cooldown:
// while it lasts, reads go straight to the next host, so a dead mirror costs
// one timeout per cooldown rather than one per read. A mirror that answers
// 404 for a blob is passed over for that request only.

// DefaultMirrorCooldown is the first cooldown of a failing mirror; it doubles
// with each further failure, up to 16 times.
const DefaultMirrorCooldown = 30 * time.Second

// hostState is shared by every client of one mirror endpoint.
type hostState struct {
	url      string
	until    atomic.Int64 // unix nanoseconds; skipped while now < until
	failures atomic.Int32 // consecutive
}

var hostStates sync.Map // endpoint URL -> *hostState

func stateFor(url string) *hostState {
	s, _ := hostStates.LoadOrStore(url, &hostState{url: url})
	return s.(*hostState)
}

func (s *hostState) up() bool { return time.Now().UnixNano() >= s.until.Load() }

func (s *hostState) ok() { s.failures.Store(0) }

func (s *hostState) fail(err error, base time.Duration) {
	n := s.failures.Add(1)
	d := base << min(n-1, 4)
	s.until.Store(time.Now().Add(d).UnixNano())
	slog.Warn("registry mirror failed; using the next host", "mirror", s.url, "cooldown", d, "err", err)
}

// mirrorSkip says a mirror error is about one blob of size bytes (404, or
// a whole-blob answer of a cache still filling it), not the mirror.
func mirrorSkip(err error, size int64) bool {
	var terr *transport.Error
	var ir ignoredRange
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound ||
		errors.As(err, &ir) && (ir.length == size || size < 0 && ir.length > 0)
}

// hostTransport points requests made for a Host at its endpoint: the
// scheme and API root of hosts.toml (override_path), its headers, and for a
// mirror, a 200 to a Range request is refused rather than read whole.
type hostTransport struct {
	h      Host
	mirror bool
	next   http.RoundTripper
	probe  http.RoundTripper // for fill checks (see checkFill); nil: next
}

// probeKey marks the context of a fill check.
type probeKey struct{}

// ignoredRange is a mirror's 200 to a Range request. A pull-through cache
// (docker-registry in proxy mode) answers so while it fills a blob it does
// not have yet; with the blob's length that is a miss for this request
// only, else the mirror is broken (an error page, a wrong blob).
type ignoredRange struct{ length int64 }

func (e ignoredRange) Error() string {
	return fmt.Sprintf("mirror ignored Range (answered 200 with %d bytes)", e.length)
}

func (t *hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.h.Host {
		return t.next.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.URL.Scheme = t.h.Scheme
	if p := r.URL.Path; t.h.Path != "/v2" && (p == "/v2" || strings.HasPrefix(p, "/v2/")) {
		r.URL.Path = t.h.Path + strings.TrimPrefix(p, "/v2")
		r.URL.RawPath = ""
	}
	for k, vs := range t.h.Header {
		if r.Header.Get(k) == "" {
			r.Header[k] = vs
		}
	}
	next := t.next
	if t.probe != nil && r.Context().Value(probeKey{}) != nil {
		next = t.probe
	}
	resp, err := next.RoundTrip(r)
	if err == nil && t.mirror && resp.StatusCode == http.StatusOK && req.Header.Get("Range") != "" {
		resp.Body.Close()
		return nil, ignoredRange{resp.ContentLength}
	}
	return resp, err
}

// namespace is the hosts.toml directory name of a registry.
func namespace(r name.Registry) string {
	if s := r.RegistryStr(); s != name.DefaultRegistry {
		return s
	}
	return "docker.io"
}

// sameHost tells whether a hosts.toml server entry is the registry the
// image names (so the origin client serves it).
func sameHost(h Host, r name.Registry) bool {
	s := r.RegistryStr()
	return h.Host == s || s == name.DefaultRegistry && (h.Host == "registry-1.docker.io" || h.Host == "index.docker.io")
}

// endpointTransport is the HTTP transport for h: the default one with h's
// TLS settings and dial timeout, under hostTransport.
func endpointTransport(h Host, o Options, mirror bool) (http.RoundTripper, error) {
	var base http.RoundTripper
	if o.Transport != nil {
		base = &countingTransport{next: o.Transport}
	} else {
		t := baseTransport(o).(*http.Transport).Clone()
		tc, err := h.tlsConfig(t.TLSClientConfig)
		if err != nil {
			return nil, err
		}
		t.TLSClientConfig = tc
		dial := h.DialTimeout
		if mirror {
			// Manifest requests through go-containerregistry have no
			// deadline of their own: bound a silent mirror here.
			t.ResponseHeaderTimeout = o.Timeout
			if dial <= 0 || dial > o.Timeout {
				dial = o.Timeout
			}
		}
		if dial > 0 {
			t.DialContext = (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext
		}
		base = &countingTransport{next: t}
		if mirror {
			// A fill check that meets a mirror streaming the whole blob
			// hangs up at once; a small receive window keeps what the
			// mirror (and so the registry behind it) sends before it
			// notices to a few kilobytes instead of megabytes.
			p := t.Clone()
			p.DisableKeepAlives = true
			p.DialContext = (&net.Dialer{Timeout: dial, Control: smallReceiveBuffer}).DialContext
			return &hostTransport{h: h, mirror: mirror, next: wrapBlobs(base, o), probe: &countingTransport{next: p}}, nil
		}
	}
	return &hostTransport{h: h, mirror: mirror, next: wrapBlobs(base, o)}, nil
}

// setupHosts gives c the endpoints of o.HostsDir for its registry: mirrors
// (tried in order before c), and c's own transport settings when hosts.toml
// configures the registry itself. A hosts.toml whose server is another host
// makes that host the last one tried, before the registry named by the image.
func (c *client) setupHosts(o Options) error {
	hosts, err := LoadHosts(o.HostsDir, namespace(c.repo.Registry))
	if err != nil || len(hosts) == 0 {
		return err
	}
	server := hosts[len(hosts)-1]
	mirrors := hosts[:len(hosts)-1]
	if sameHost(server, c.repo.Registry) {
		if o.Transport == nil && (server.CA != nil || server.Client != nil || server.SkipVerify != nil || server.Header != nil || server.DialTimeout > 0 || server.Path != "/v2") {
			if c.base, err = endpointTransport(server, o, false); err != nil {
				return fmt.Errorf("registry %s: %w", server.URL(), err)
			}
		}
	} else {
		mirrors = hosts
	}
	for _, h := range mirrors {
		if !h.Pull && !h.Resolve {
			continue
		}
		m, err := mirrorClient(c.repo, h, o)
		if err != nil {
			return fmt.Errorf("mirror %s: %w", h.URL(), err)
		}
		c.mirrors = append(c.mirrors, m)
	}
	return nil
}

func mirrorClient(repo name.Repository, h Host, o Options) (*client, error) {
	nopts := []name.Option{name.WeakValidation}
	if h.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	mrepo, err := name.NewRepository(h.Host+"/"+repo.RepositoryStr(), nopts...)
	if err != nil {
		return nil, err
	}
	base, err := endpointTransport(h, o, true)
	if err != nil {
		return nil, err
	}
	mo := o
	mo.Retries = 0 // the next host is the retry
	// No slots: a mirror GET runs in the slot the registry's client gave
	// the read.
	return &client{repo: mrepo, o: mo, base: base, host: h, state: stateFor(h.URL())}, nil
}

func (c *client) cooldown() time.Duration {
	if c.o.MirrorCooldown > 0 {
		return c.o.MirrorCooldown
	}
	return DefaultMirrorCooldown
}

// fetch is fetchHere through the mirrors first: each live pull mirror gets
// one try at what is still missing, then the registry (with its retries)
// gets the rest.
func (c *client) fetch(ctx context.Context, digest string, size, off, n int64, sink func(p []byte, at int64) error, buf []byte) error {
	if len(c.mirrors) == 0 {
		return c.fetchHere(ctx, digest, size, off, n, sink, buf)
	}
	var done int64 // bytes of [off, off+n) sink has taken, from off on
	track := func(p []byte, at int64) error {
		if err := sink(p, at); err != nil {
			return err
		}
		done = max(done, at+int64(len(p))-off)
		return nil
	}
	for _, m := range c.mirrors {
		if !m.host.Pull || !m.state.up() || !m.fillDone(ctx, digest, size) {
			continue
		}
		err := m.fetchHere(ctx, digest, size, off+done, n-done, track, buf)
		var ir ignoredRange
		if errors.As(err, &ir) && ir.length == size {
			// Evicted from the mirror since: check again next time.
			if v, ok := m.fills.Load(digest); ok && v.(*fill).ready {
				m.fills.CompareAndDelete(digest, v)
			}
		}
		if err == nil {
			m.state.ok()
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if !mirrorSkip(err, size) {
			m.state.fail(err, m.cooldown())
		}
		countersFor(m.host.Host).fallbacks.Add(1)
	}
	return c.fetchHere(ctx, digest, size, off+done, n-done, track, buf)
}

// probeSize is probeHere through the live pull mirrors first.
func (c *client) probeSize(ctx context.Context, digest string) (int64, error) {
	for _, m := range c.mirrors {
		if !m.host.Pull || !m.state.up() {
			continue
		}
		size, err := m.probeHere(ctx, digest)
		if err == nil {
			m.state.ok()
			return size, nil
		}
		if ctx.Err() != nil {
			return 0, err
		}
		if !mirrorSkip(err, -1) {
			m.state.fail(err, m.cooldown())
		}
	}
	return c.probeHere(ctx, digest)
}

// getManifest fetches ref's manifest (or index) from the live mirrors that
// may resolve it (resolve capability; for a digest, pull is enough), then
// from the registry. The descriptor keeps the host it came from, so the
// platform manifest and the config are read from there too.
func getManifest(ref name.Reference, o Options, opts []ggcrremote.Option) (*ggcrremote.Descriptor, error) {
	cl, err := clientFor(ref.Context(), o)
	if err != nil {
		return nil, err
	}
	_, byDigest := ref.(name.Digest)
	for _, m := range cl.mirrors {
		if !(m.host.Resolve || byDigest && m.host.Pull) || !m.state.up() {
			continue
		}
		var mref name.Reference
		var err error
		if byDigest {
			mref, err = name.NewDigest(m.repo.Name()+"@"+ref.Identifier(), name.WeakValidation, name.Insecure)
		} else {
			mref, err = name.NewTag(m.repo.Name()+":"+ref.Identifier(), name.WeakValidation, name.Insecure)
		}
		if err != nil {
			continue
		}
		desc, err := ggcrremote.Get(mref, append(opts[:len(opts):len(opts)], ggcrremote.WithTransport(m.base))...)
		if err == nil {
			m.state.ok()
			return desc, nil
		}
		if !mirrorSkip(err, 0) && !errors.Is(err, context.Canceled) {
			m.state.fail(err, m.cooldown())
		}
	}
	return ggcrremote.Get(ref, append(opts[:len(opts):len(opts)], ggcrremote.WithTransport(cl.base))...)
}

// A pull-through cache that does not have a blob yet answers a Range GET
// with the whole blob while it fetches it, and docker-registry's proxy mode
// streams every such request from the registry anew until its fill is done.
// Reading those answers, or going to the registry meanwhile, would cost
// registry traffic per request. So the first request of the node for a blob
// checks the mirror with a one-byte GET; while the mirror answers with the
// whole blob (hung up on at once), that request polls it, backing off from
// 1 s to 4 s, for up to Options.Timeout, and the node's other requests for the
// blob wait. A mirror still filling after that is passed over for the blob
// for a cooldown.
type fill struct {
	done  chan struct{}
	ready bool      // set before done is closed
	until time.Time // when not ready: the mirror is passed over for the blob until then
}

// fillDone tells whether the mirror may be asked for ranges of digest (of
// size bytes), checking it first if this is the node's first request.
func (c *client) fillDone(ctx context.Context, digest string, size int64) bool {
	for {
		f := &fill{done: make(chan struct{})}
		v, loaded := c.fills.LoadOrStore(digest, f)
		if !loaded {
			c.checkFill(ctx, f, digest, size)
			return f.ready
		}
		f = v.(*fill)
		select {
		case <-f.done:
		case <-ctx.Done():
			return false
		}
		if f.ready {
			return true
		}
		if time.Now().Before(f.until) {
			return false
		}
		c.fills.CompareAndDelete(digest, f)
	}
}

func (c *client) checkFill(ctx context.Context, f *fill, digest string, size int64) {
	defer close(f.done)
	ctx = context.WithValue(ctx, probeKey{}, true)
	url := c.blobURL(digest)
	deadline := time.Now().Add(c.o.Timeout)
	for wait := time.Second; ; wait = min(2*wait, 4*time.Second) {
		got, err := c.probeOnce(ctx, url, digest)
		if err == nil && got != size {
			c.state.fail(fmt.Errorf("%s: the mirror says the blob has %d bytes, not %d", url, got, size), c.cooldown())
			return
		}
		var ir ignoredRange
		if !errors.As(err, &ir) || ir.length != size {
			// Ranges served, or not a fill: the fetch that follows
			// finds out which.
			f.ready = true
			return
		}
		if time.Now().Add(wait).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	f.until = time.Now().Add(c.cooldown())
	slog.Warn("registry mirror is still filling the blob; using the next host for it", "mirror", c.state.url, "blob", digest, "for", c.cooldown())
}

func smallReceiveBuffer(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	})
	if err == nil {
		err = serr
	}
	return err
}
