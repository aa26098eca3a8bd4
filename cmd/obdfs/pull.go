package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/remote"
)

func init() { register(&pullCmds{}) }

type pullCmds struct {
	Pull pullCmd `cmd:"" help:"Download every layer of a registry image into the blob cache (resumable; verified against the digests)."`
}

// remoteFlags are the registry options; mount takes the same ones for
// docker:// and oci: stacks.
type remoteFlags struct {
	CacheDir  string `default:"/var/cache/obdfs" placeholder:"DIR" help:"Persistent cache of registry blobs."`
	CacheMax  string `default:"4GiB" placeholder:"SIZE" help:"Bound of the blob cache; least recently used blobs not in use are evicted."`
	Insecure  bool   `help:"Allow plain HTTP and unverified TLS to the registry."`
	Platform  string `default:"linux/amd64" placeholder:"OS/ARCH[/VARIANT]" help:"Image to pick from a multi-platform index."`
	HostsDir  string `name:"hosts-dir" default:"/etc/containerd/certs.d" placeholder:"DIR" help:"containerd registry host configuration (HOST/hosts.toml: mirrors, TLS, headers); \"\" for none."`
	Proxy     string `placeholder:"URL" help:"HTTP proxy for every registry request, redirected blob URLs included (hosts in NO_PROXY go direct; default: HTTP_PROXY/HTTPS_PROXY/NO_PROXY)."`
	P2P       string `name:"p2p-address" placeholder:"ADDR" help:"overlaybd's P2P mode: GET blobs as ADDR/<registry blob URL> from a P2P agent (p2pConfig.address)."`
	Dragonfly bool   `help:"Send Dragonfly's request headers (X-Dragonfly-Priority: 6 for reads, 3 for readahead and background) with blob GETs."`
	configFlag
	// A stalled registry holds a read for (retries+1) × timeout plus the
	// backoff (about 2 minutes with the defaults) before it fails with EIO.
	RegistryTimeout time.Duration `name:"registry-timeout" default:"30s" placeholder:"DURATION" help:"Bound of one registry request, body included; a read fails with EIO after --registry-retries more attempts."`
	RegistryRetries int           `name:"registry-retries" default:"3" placeholder:"N" help:"Further attempts of a failed range GET (0: none)."`
}

// stackFlags are the flags of every command that opens a STACK: the
// registry options, and skipping the parent-uuid chain check (which
// overlaybd itself does not make at runtime).
type stackFlags struct {
	remoteFlags
	lazyFlags
	NoOrderCheck bool `name:"no-order-check" help:"Open layers even when a layer's parent uuid is not the uuid of the layer below (both set)."`
}

// imageOptions returns the image.Options the flags ask for, with cache as
// the decoded-block cache (nil: none).
func (f stackFlags) imageOptions(cache *blockcache.Cache) (image.Options, error) {
	ro, err := f.remoteFlags.options()
	if err != nil {
		return image.Options{}, err
	}
	if err := f.lazyFlags.apply(&ro); err != nil {
		return image.Options{}, err
	}
	if err := f.applyDownload(&ro); err != nil {
		return image.Options{}, err
	}
	return image.Options{Cache: cache, Remote: ro, NoOrderCheck: f.NoOrderCheck}, nil
}

func (f remoteFlags) options() (remote.Options, error) {
	max, err := parseSize(f.CacheMax)
	if err != nil || max <= 0 {
		return remote.Options{}, fmt.Errorf("--cache-max %q: want a size such as 4GiB", f.CacheMax)
	}
	if f.RegistryTimeout <= 0 {
		return remote.Options{}, fmt.Errorf("--registry-timeout %v: want a positive duration such as 30s", f.RegistryTimeout)
	}
	if f.RegistryRetries < 0 {
		return remote.Options{}, fmt.Errorf("--registry-retries %d: want 0 or more", f.RegistryRetries)
	}
	retries := f.RegistryRetries
	if retries == 0 {
		retries = -1 // remote.Options: 0 means the default, negative none
	}
	o := remote.Options{CacheDir: f.CacheDir, CacheMax: max, Insecure: f.Insecure, Platform: f.Platform, HostsDir: f.HostsDir,
		Proxy: f.Proxy, P2P: f.P2P, Dragonfly: f.Dragonfly, Timeout: f.RegistryTimeout, Retries: retries}
	return o, f.applyConfig(&o)
}

type pullCmd struct {
	remoteFlags
	Jobs int    `short:"j" default:"4" help:"Range GETs in flight per layer."`
	Ref  string `arg:"" name:"REF" help:"docker://HOST/REPO[:TAG|@DIGEST] (the docker:// may be left out)."`
}

func (c *pullCmd) Run() error {
	o, err := c.options()
	if err != nil {
		return err
	}
	ref := c.Ref
	if !strings.HasPrefix(ref, "docker://") && !strings.HasPrefix(ref, "oci:") {
		ref = "docker://" + ref
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	blobs, err := remote.Resolve(ctx, ref, o)
	if err != nil {
		return err
	}
	defer func() {
		for _, b := range blobs {
			b.Close()
		}
	}()
	bar := newProgress(os.Stderr)
	for i, b := range blobs {
		label := fmt.Sprintf("layer %d/%d %s", i+1, len(blobs), shortDigest(b.Digest()))
		start := time.Now()
		fetched0 := b.Stats().FetchedBytes
		err := b.Fetch(ctx, c.Jobs, func(have, total int64) { bar.update(label, have, total) })
		bar.done()
		if err != nil {
			return fmt.Errorf("pull %s: %w (run it again to resume)", c.Ref, err)
		}
		st := b.Stats()
		got := st.FetchedBytes - fetched0
		// Fetch hashed the cached copy as it is now; a blob of a local OCI
		// layout is read in place and not hashed.
		what := "sha256 verified"
		if !st.Verified {
			what = "a local layout file, not hashed"
		}
		if st.Damaged > 0 {
			what += fmt.Sprintf(" (%d damaged cached chunks fetched again)", st.Damaged)
		}
		fmt.Fprintf(os.Stderr, "%s: %s, %s fetched in %.1fs, %s\n", label, humanBytes(b.Size()), humanBytes(got), time.Since(start).Seconds(), what)
	}
	return nil
}

func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// progress draws one line, redrawn at most 10 times a second, only on a
// terminal (logs get the summary lines alone).
type progress struct {
	f    *os.File
	tty  bool
	mu   sync.Mutex
	last time.Time
	drew bool
}

func newProgress(f *os.File) *progress {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return &progress{f: f, tty: err == nil}
}

func (p *progress) update(label string, have, total int64) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && have < total {
		return
	}
	p.last = time.Now()
	const width = 30
	fill := 0
	if total > 0 {
		fill = int(have * width / total)
	}
	fmt.Fprintf(p.f, "\r%s [%s%s] %s / %s ", label, strings.Repeat("#", fill), strings.Repeat(".", width-fill), humanBytes(have), humanBytes(total))
	p.drew = true
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drew {
		fmt.Fprint(p.f, "\r\033[K")
		p.drew = false
	}
}
