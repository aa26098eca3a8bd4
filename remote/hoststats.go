package remote

import (
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
)

// HostStats are the HTTP counters of one host the process talked to for
// registries: the registry, its mirrors, token servers and the object
// storage blobs are redirected to. Metrics export them (metrics package).
type HostStats struct {
	Host      string
	Requests  int64 // HTTP requests sent
	Bytes     int64 // response body bytes received
	Errors    int64 // requests that failed or answered 4xx/5xx
	Retries   int64 // range GETs and probes tried again (at the registry the image names)
	Fallbacks int64 // requests passed on to the next host (a mirror that failed or lacked the blob)
}

type hostCounters struct {
	requests, bytes, errors, retries, fallbacks atomic.Int64
}

var hostCounts sync.Map // host -> *hostCounters

func countersFor(host string) *hostCounters {
	if v, ok := hostCounts.Load(host); ok {
		return v.(*hostCounters)
	}
	v, _ := hostCounts.LoadOrStore(host, &hostCounters{})
	return v.(*hostCounters)
}

// AllHostStats returns the counters of every host so far, by host name.
func AllHostStats() []HostStats {
	var out []HostStats
	hostCounts.Range(func(k, v any) bool {
		c := v.(*hostCounters)
		out = append(out, HostStats{Host: k.(string), Requests: c.requests.Load(), Bytes: c.bytes.Load(),
			Errors: c.errors.Load(), Retries: c.retries.Load(), Fallbacks: c.fallbacks.Load()})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// countingTransport counts requests, body bytes and failures per host.
type countingTransport struct{ next http.RoundTripper }

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := countersFor(req.URL.Host)
	c.requests.Add(1)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		c.errors.Add(1)
		return nil, err
	}
	if resp.StatusCode >= 400 {
		c.errors.Add(1)
	}
	if resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = &countingBody{ReadCloser: resp.Body, c: c}
	}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	c *hostCounters
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.bytes.Add(int64(n))
	return n, err
}
