package remote

import (
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Defaults of Options.
const (
	DefaultCacheDir    = "/var/cache/obdfs"
	DefaultCacheMax    = 4 << 30   // overlaybd's cacheSizeGB default
	DefaultRefillSize  = 256 << 10 // overlaybd's refillSize default
	DefaultTimeout     = 30 * time.Second
	DefaultRetries     = 3
	DefaultMaxInflight = 16
	DefaultReadahead   = 32 << 20
	DefaultPlatform    = "linux/amd64"
)

// Options configure Resolve and OpenBlob. The zero value of every field
// means its default.
type Options struct {
	// CacheDir holds the persistent blob cache (default /var/cache/obdfs).
	CacheDir string
	// CacheMax bounds the bytes the cache keeps on disk (default 4 GiB);
	// blobs in use are never evicted, so the bound can be exceeded by them.
	CacheMax int64
	// Insecure allows plain HTTP (and any TLS certificate) to the registry.
	Insecure bool
	// Platform picks the manifest from an index: os/arch[/variant]
	// (default linux/amd64).
	Platform string
	// RefillSize is the fetch and cache granularity: a power of two, a
	// multiple of 4 KiB (default 256 KiB). Misses are widened to it.
	RefillSize int64
	// Keychain finds credentials (default authn.DefaultKeychain: the docker
	// config file and its credential helpers).
	Keychain authn.Keychain

	// Timeout bounds one HTTP attempt, body included (default 30 s).
	Timeout time.Duration
	// Retries is how many times a failed range GET is tried again
	// (default 3; negative means none).
	Retries int
	// Backoff is the wait before the first retry; it is multiplied by 4 for
	// each further one (default 100 ms).
	Backoff time.Duration
	// MaxInflight bounds the range GETs in flight per repository for
	// readers (default 16); readahead has a budget of the same size of its
	// own, so it never delays a reader's miss.
	MaxInflight int
	// Background downloads the rest of every blob opened lazily.
	Background BackgroundOptions
	// RecordTrace, if set, records the ranges read from every blob (see
	// trace.go) and saves its file when a blob is closed.
	RecordTrace *TraceRecorder
	// Trace, if set, is replayed on every blob it has ranges for: they are
	// fetched ahead of the readers right after the open.
	Trace *Trace
	// Readahead is the largest window a sequential reader's readahead
	// grows to, in bytes (default 32 MiB; negative turns readahead off).
	Readahead int64
	// Transport is the base HTTP transport (default: a clone of
	// go-containerregistry's remote.DefaultTransport). Tests inject faults here.
	Transport http.RoundTripper
	// UserAgent is sent with every request (default "obdfs").
	UserAgent string

	// HostsDir is a containerd certs.d directory (HOST/hosts.toml): the
	// mirrors, TLS settings and headers of each registry (default: none).
	HostsDir string
	// MirrorCooldown is how long a failed mirror is passed over at first
	// (default DefaultMirrorCooldown; doubled for each further failure).
	MirrorCooldown time.Duration
	// Proxy is the HTTP proxy of every request (http://HOST:PORT; hosts in
	// NO_PROXY go direct); "" means HTTP_PROXY/HTTPS_PROXY/NO_PROXY.
	Proxy string
	// P2P is overlaybd's p2pConfig.address: blob GETs are sent to
	// P2P/<registry blob URL> (p2p.go); "" means off.
	P2P string
	// Dragonfly adds Dragonfly's request headers (priority) to blob GETs.
	Dragonfly bool
}

func (o Options) withDefaults() (Options, error) {
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.CacheMax == 0 {
		o.CacheMax = DefaultCacheMax
	}
	if o.CacheMax < 0 {
		return o, fmt.Errorf("remote: cache max %d is negative", o.CacheMax)
	}
	if o.Platform == "" {
		o.Platform = DefaultPlatform
	}
	if o.RefillSize == 0 {
		o.RefillSize = DefaultRefillSize
	}
	if o.RefillSize < 4096 || o.RefillSize&(o.RefillSize-1) != 0 || o.RefillSize > 64<<20 {
		return o, fmt.Errorf("remote: refill size %d is not a power of two between 4 KiB and 64 MiB", o.RefillSize)
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Backoff == 0 {
		o.Backoff = 100 * time.Millisecond
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.Readahead == 0 {
		o.Readahead = DefaultReadahead
	}
	if o.Background.Delay < 0 || o.Background.MaxBytesPerSec < 0 {
		return o, fmt.Errorf("remote: negative background delay or rate")
	}
	if _, err := proxyFunc(o.Proxy); err != nil {
		return o, fmt.Errorf("remote: %w", err)
	}
	p2p, err := p2pAddress(o.P2P)
	if err != nil {
		return o, fmt.Errorf("remote: %w", err)
	}
	o.P2P = p2p
	if o.UserAgent == "" {
		o.UserAgent = "obdfs"
	}
	return o, nil
}
