package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/internal/atomicfile"
)

// Layer-descriptor annotations of overlaybd images (ACI pkg/label/label.go;
// docs/image-config.md §3).
const (
	AnnotationBlobDigest = "containerd.io/snapshot/overlaybd/blob-digest"
	AnnotationBlobSize   = "containerd.io/snapshot/overlaybd/blob-size"
	AnnotationVersion    = "containerd.io/snapshot/overlaybd/version"
	AnnotationFsType     = "containerd.io/snapshot/overlaybd/blob-fs-type"
	// TurboOCI layers name the original layer they read file data from
	// (and the legacy "fastoci" spelling of the same keys).
	annotationTurboTarget   = "containerd.io/snapshot/overlaybd/turbo-oci/target-digest"
	annotationFastOCITarget = "containerd.io/snapshot/overlaybd/fastoci/target-digest"
	// Version is the native overlaybd layer version written by push.
	Version = "0.1.0"
)

// Resolve resolves docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG] to the
// overlaybd layer blobs of the image, bottom first. An index is resolved to
// Options.Platform. A non-overlaybd image fails with ErrNotOverlaybd. On error
// no blob is left open. ctx bounds the blobs' fetches for their whole life.
//
// When the registry cannot be reached, a docker:// spec resolved before
// (with the same cache dir and platform) is served from the cache, with a
// warning: that is what lets a daemon restart with the registry down.
func Resolve(ctx context.Context, spec string, o Options) ([]*Blob, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(spec, "docker://"):
		return resolveDocker(ctx, spec, o)
	case strings.HasPrefix(spec, "oci:"):
		return resolveLayout(spec, o)
	}
	return nil, fmt.Errorf("image %q: want docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]", spec)
}

// layerRef is one resolved layer, also the record saved for offline use.
type layerRef struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

type resolved struct {
	Spec     string     `json:"spec"`
	Platform string     `json:"platform"`
	Repo     string     `json:"repo"`
	Insecure bool       `json:"insecure"`
	Manifest string     `json:"manifest"` // digest of the image manifest
	Layers   []layerRef `json:"layers"`
}

func resolveDocker(ctx context.Context, spec string, o Options) ([]*Blob, error) {
	nopts := []name.Option{name.WeakValidation}
	if o.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(spec, "docker://"), nopts...)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", spec, err)
	}
	plat, err := v1.ParsePlatform(o.Platform)
	if err != nil {
		return nil, fmt.Errorf("platform %q: %w", o.Platform, err)
	}
	// The blob client warms up (handshake, connections) while the manifest
	// is fetched: a cold open then costs about one round trip after it.
	var warming sync.WaitGroup
	if cl, err := clientFor(ref.Context(), o); err == nil {
		warming.Go(func() { cl.warm(ctx) })
	}
	res, err := resolveManifest(ctx, ref, *plat, o)
	warming.Wait()
	if err == nil {
		res.Spec, res.Platform = spec, o.Platform
	}
	if err != nil {
		if !offlineWorthy(err) {
			return nil, fmt.Errorf("image %s: %w", spec, err)
		}
		saved, lerr := loadResolved(o.CacheDir, spec, o.Platform)
		if lerr != nil {
			return nil, fmt.Errorf("image %s: %w", spec, err)
		}
		slog.Warn("registry unreachable; using the image as last resolved", "image", spec,
			"manifest", saved.Manifest, "err", err)
		res = saved
	} else if err := saveResolved(o.CacheDir, res); err != nil {
		slog.Warn("could not record the resolved image", "image", spec, "err", err)
	}
	cl, err := clientFor(ref.Context(), o)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec, err)
	}
	var blobs []*Blob
	for _, l := range res.Layers {
		b, err := openRemote(ctx, cl, l.Digest, l.Size, o)
		if err != nil {
			closeAll(blobs)
			return nil, fmt.Errorf("image %s: %w", spec, err)
		}
		blobs = append(blobs, b)
	}
	return blobs, nil
}

// offlineWorthy tells failures where the registry could not be reached
// (connection refused, timeouts, 5xx) from answers it gave (auth, not found,
// not overlaybd), which the cache must not paper over.
func offlineWorthy(err error) bool {
	if errors.Is(err, ErrNotOverlaybd) || errors.Is(err, context.Canceled) {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode >= 500 || terr.StatusCode == http.StatusTooManyRequests
	}
	return true
}

func resolveManifest(ctx context.Context, ref name.Reference, plat v1.Platform, o Options) (*resolved, error) {
	// Every attempt shares ctx: bound them together as the range GETs are
	// bounded one by one, so a registry that accepts and never answers
	// fails the open instead of holding it.
	ctx, cancel := context.WithTimeout(ctx, o.Timeout*time.Duration(max(o.Retries, 0)+1))
	defer cancel()
	ropts := []ggcrremote.Option{
		ggcrremote.WithContext(ctx),
		ggcrremote.WithAuthFromKeychain(o.Keychain),
		ggcrremote.WithPlatform(plat),
		ggcrremote.WithUserAgent(o.UserAgent),
		ggcrremote.WithRetryBackoff(ggcrremote.Backoff{Duration: o.Backoff, Factor: 4, Steps: o.Retries + 1}),
	}
	desc, err := getManifest(ref, o, ropts)
	if err != nil {
		return nil, err
	}
	img, err := desc.Image()
	if err != nil {
		return nil, err
	}
	return imageLayers(ref.String(), img, func(res *resolved) {
		res.Repo, res.Insecure = ref.Context().Name(), o.Insecure
	})
}

// imageLayers checks that img is a native overlaybd image and lists its
// layer blobs.
func imageLayers(what string, img v1.Image, fill func(*resolved)) (*resolved, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	dig, err := img.Digest()
	if err != nil {
		return nil, err
	}
	res := &resolved{Manifest: dig.String()}
	fill(res)
	if len(m.Layers) == 0 {
		return nil, fmt.Errorf("%s: %w: the image has no layers", what, ErrNotOverlaybd)
	}
	// TurboOCI first: its base layer looks native, and the error must say
	// what the image is rather than fail on some other layer.
	for i, l := range m.Layers {
		a := l.Annotations
		v := a[AnnotationVersion]
		if strings.Contains(v, "turbo") || strings.Contains(v, "fastoci") || a[annotationTurboTarget] != "" || a[annotationFastOCITarget] != "" {
			return nil, fmt.Errorf("%s: %w: a TurboOCI image (layer %d, version %q, media type %s): its file data lives in the original OCI layers; obdfs reads native overlaybd images only (convert without --turboOCI)",
				what, ErrNotOverlaybd, i, v, l.MediaType)
		}
	}
	for i, l := range m.Layers {
		a := l.Annotations
		bd := a[AnnotationBlobDigest]
		if bd == "" {
			return nil, fmt.Errorf("%s: %w: layer %d (%s, %s) has no %s annotation", what, ErrNotOverlaybd, i, l.Digest, l.MediaType, AnnotationBlobDigest)
		}
		switch l.MediaType {
		case types.OCIUncompressedLayer, types.DockerUncompressedLayer, types.OCIUncompressedRestrictedLayer:
		default:
			return nil, fmt.Errorf("%s: %w: layer %d has media type %s, want an uncompressed tar type", what, ErrNotOverlaybd, i, l.MediaType)
		}
		if bd != l.Digest.String() {
			return nil, fmt.Errorf("%s: %w: layer %d: %s annotation %s differs from the descriptor digest %s", what, ErrNotOverlaybd, i, AnnotationBlobDigest, bd, l.Digest)
		}
		if s := a[AnnotationBlobSize]; s != "" && s != strconv.FormatInt(l.Size, 10) {
			return nil, fmt.Errorf("%s: layer %d: %s annotation %s differs from the descriptor size %d", what, i, AnnotationBlobSize, s, l.Size)
		}
		res.Layers = append(res.Layers, layerRef{Digest: l.Digest.String(), Size: l.Size})
	}
	return res, nil
}

func refPath(cacheDir, spec, platform string) string {
	h := sha256.Sum256([]byte(spec + "\x00" + platform))
	return filepath.Join(cacheDir, "refs", hex.EncodeToString(h[:16])+".json")
}

func saveResolved(cacheDir string, res *resolved) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	p := refPath(cacheDir, res.Spec, res.Platform)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, b, 0o600)
}

func loadResolved(cacheDir, spec, platform string) (*resolved, error) {
	b, err := os.ReadFile(refPath(cacheDir, spec, platform))
	if err != nil {
		return nil, err
	}
	var res resolved
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, err
	}
	if res.Spec != spec || res.Platform != platform || len(res.Layers) == 0 {
		return nil, fmt.Errorf("saved resolution of %s does not match", spec)
	}
	return &res, nil
}

// resolveLayout opens the image tagged TAG (or the only image) of an OCI
// image layout. Its blobs are local files: nothing is cached.
func resolveLayout(spec string, o Options) ([]*Blob, error) {
	dir, tag := strings.TrimPrefix(spec, "oci:"), ""
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if i := strings.LastIndexByte(dir, ':'); i >= 0 && !strings.Contains(dir[i+1:], "/") {
			dir, tag = dir[:i], dir[i+1:]
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec, err)
	}
	plat, err := v1.ParsePlatform(o.Platform)
	if err != nil {
		return nil, fmt.Errorf("platform %q: %w", o.Platform, err)
	}
	img, err := pickImage(idx, tag, *plat, true)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec, err)
	}
	res, err := imageLayers(spec, img, func(*resolved) {})
	if err != nil {
		return nil, err
	}
	var blobs []*Blob
	for _, l := range res.Layers {
		hexd, _, err := splitDigest(l.Digest)
		if err != nil {
			closeAll(blobs)
			return nil, fmt.Errorf("image %s: %w", spec, err)
		}
		b, err := openLocal(filepath.Join(dir, "blobs", "sha256", hexd), l.Digest, l.Size)
		if err != nil {
			closeAll(blobs)
			return nil, fmt.Errorf("image %s: %w", spec, err)
		}
		blobs = append(blobs, b)
	}
	return blobs, nil
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

// pickImage finds in idx the manifest tagged tag (any if tag is empty and
// there is one), descending into nested indexes by platform.
func pickImage(idx v1.ImageIndex, tag string, plat v1.Platform, top bool) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var cands []v1.Descriptor
	for _, d := range im.Manifests {
		if top && tag != "" && d.Annotations[refNameAnnotation] != tag {
			continue
		}
		if !top && d.Platform != nil && !d.Platform.Satisfies(plat) {
			continue
		}
		cands = append(cands, d)
	}
	if !top && len(cands) > 1 {
		// Prefer entries that name the platform over unlabelled ones
		// (attestations are "unknown/unknown" and are filtered above).
		var named []v1.Descriptor
		for _, d := range cands {
			if d.Platform != nil {
				named = append(named, d)
			}
		}
		if len(named) > 0 {
			cands = named
		}
	}
	switch {
	case len(cands) == 0 && tag != "" && top:
		return nil, fmt.Errorf("no manifest tagged %q", tag)
	case len(cands) == 0:
		return nil, fmt.Errorf("no manifest for platform %s", plat)
	case len(cands) > 1 && top:
		return nil, fmt.Errorf("%d manifests in the layout; name one with :TAG", len(cands))
	}
	d := cands[0]
	switch {
	case d.MediaType.IsIndex():
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, err
		}
		return pickImage(child, "", plat, false)
	case d.MediaType.IsImage():
		return idx.Image(d.Digest)
	}
	return nil, fmt.Errorf("manifest %s has media type %s, not an image", d.Digest, d.MediaType)
}

func closeAll(bs []*Blob) {
	for _, b := range bs {
		b.Close()
	}
}
