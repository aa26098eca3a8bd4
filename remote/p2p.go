package remote

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// Proxies, P2P and Dragonfly.
//
// Every request (registry, mirrors, token servers, and the object storage
// a blob GET is redirected to) goes through one HTTP transport, whose proxy
// is Options.Proxy or else the environment (HTTP_PROXY, HTTPS_PROXY,
// NO_PROXY, as Go reads them).
//
// Options.P2P is overlaybd's p2pConfig address: a blob GET for URL is sent
// as ADDRESS/URL to a P2P agent, which fetches URL (with the request's
// Authorization and Range) from its peers or the registry. URL is the
// registry's blob URL, never where the registry redirects it to, so signed
// object-storage URLs, which change on every request, never become the
// agent's cache keys. Overlaybd prefixes the redirected URL instead.
//
// Options.Dragonfly adds the headers Dragonfly's dfdaemon reads when it is
// the proxy or a mirror: X-Dragonfly-Priority, 6 for reads a reader waits
// for and 3 for readahead and the background download (the values Nydus
// uses for on-demand and prefetch reads), and X-Dragonfly-Application.

// proxyFunc is the proxy of the transport: Options.Proxy for every host
// but those NO_PROXY names (loopback included, unlike the environment's
// rule, so a proxy on this machine can be given for a registry on it), or
// the environment.
func proxyFunc(proxy string) (func(*http.Request) (*url.URL, error), error) {
	if proxy == "" {
		return http.ProxyFromEnvironment, nil
	}
	if !strings.Contains(proxy, "://") {
		proxy = "http://" + proxy
	}
	u, err := url.Parse(proxy)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "socks5") {
		return nil, fmt.Errorf("proxy %q: want http://HOST:PORT (or https://, socks5://)", proxy)
	}
	no := os.Getenv("NO_PROXY")
	if no == "" {
		no = os.Getenv("no_proxy")
	}
	return func(req *http.Request) (*url.URL, error) {
		if noProxy(no, req.URL.Host) {
			return nil, nil
		}
		return u, nil
	}, nil
}

// noProxy matches host[:port] against a NO_PROXY list: "*", host names
// (matching subdomains too; a leading dot is allowed), IP addresses and
// CIDR ranges, each with an optional :port.
func noProxy(list, hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, ""
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	ip := net.ParseIP(host)
	for _, e := range strings.Split(list, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		if e == "" {
			continue
		}
		if e == "*" {
			return true
		}
		if _, cidr, err := net.ParseCIDR(e); err == nil {
			if ip != nil && cidr.Contains(ip) {
				return true
			}
			continue
		}
		eh, ep, err := net.SplitHostPort(e)
		if err != nil {
			eh, ep = e, ""
		}
		eh = strings.Trim(eh, "[]")
		if ep != "" && ep != port {
			continue
		}
		if eip := net.ParseIP(eh); eip != nil {
			if ip != nil && eip.Equal(ip) {
				return true
			}
			continue
		}
		eh = strings.TrimPrefix(eh, ".")
		if host == eh || strings.HasSuffix(host, "."+eh) {
			return true
		}
	}
	return false
}

// p2pAddress checks an overlaybd p2pConfig address (a scheme is optional:
// overlaybd's example is localhost:19145/dadip2p).
func p2pAddress(a string) (string, error) {
	if a == "" {
		return "", nil
	}
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" {
		return "", fmt.Errorf("P2P address %q: want [http://]HOST:PORT[/PATH]", a)
	}
	return strings.TrimSuffix(a, "/"), nil
}

type prioKey struct{}

// withPrio tells the transport the class of a range GET.
func withPrio(ctx context.Context, p prio) context.Context {
	return context.WithValue(ctx, prioKey{}, p)
}

// blobTransport sends blob GETs through the P2P agent and adds the
// Dragonfly headers.
type blobTransport struct {
	p2p       string // "" none
	dragonfly bool
	next      http.RoundTripper
}

func (t *blobTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead || !strings.Contains(req.URL.Path, "/blobs/") {
		return t.next.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	if t.dragonfly {
		level := "6"
		if p, ok := req.Context().Value(prioKey{}).(prio); ok && p != prioRead {
			level = "3"
		}
		r.Header.Set("X-Dragonfly-Priority", level)
		r.Header.Set("X-Dragonfly-Application", "obdfs")
	}
	if t.p2p != "" {
		u, err := url.Parse(t.p2p + "/" + req.URL.String())
		if err != nil {
			return nil, fmt.Errorf("P2P URL for %s: %w", req.URL, err)
		}
		r.URL, r.Host = u, ""
	}
	resp, err := t.next.RoundTrip(r)
	if resp != nil {
		// The answer is the registry's, as far as the client is
		// concerned (redirects, and which errors are the registry's).
		resp.Request = req
	}
	return resp, err
}

// wrapBlobs puts blobTransport over rt when P2P or Dragonfly is on.
func wrapBlobs(rt http.RoundTripper, o Options) http.RoundTripper {
	if o.P2P == "" && !o.Dragonfly {
		return rt
	}
	return &blobTransport{p2p: o.P2P, dragonfly: o.Dragonfly, next: rt}
}
