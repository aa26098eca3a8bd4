// Package convert turns regular OCI/Docker images (gzip, zstd or plain tar
// layers) into overlaybd images: each source layer, bottom first, is applied
// by the build engine to a writable layer over the layers converted so far
// (ext4 made on the first), committed, tar-wrapped, and published with the
// media type and annotations overlaybd and accelerated-container-image read
// (those remote.Push writes). The image config keeps the source's runtime
// config and history; rootfs.diff_ids become the digests of the new blobs.
//
// Converted layers are kept in a cache keyed by the chain of source diff
// IDs (the OCI ChainID) and the conversion settings, so images sharing base
// layers convert those layers once.
package convert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/build"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/remote"
	"github.com/obdfs/obdfs/zfile"
)

// FsType is the filesystem of converted images, written as the
// blob-fs-type annotation.
const FsType = "ext4"

// engineVersion changes when the bytes a conversion produces change (mkfs
// options, apply rules), so older cache entries are not reused.
const engineVersion = "1"

// Options configure a conversion.
type Options struct {
	// VirtualSize of the image's disk (default build.DefaultVirtualSize).
	VirtualSize int64
	// ZFile compresses the layers (nil: plain LSMT).
	ZFile *zfile.WriterOptions
	// CacheDir keeps converted layers (made 0700). Empty: a temporary
	// directory removed by Close.
	CacheDir string
	// CacheMax bounds the cache's layer bytes (0: unbounded): after each
	// conversion the least recently used layers beyond it are removed,
	// never those of the images just converted.
	CacheMax int64
	// WorkDir holds writable layers and mount points (default os.TempDir()).
	WorkDir string
	// Platform, if not nil, selects the manifests of an index to convert.
	Platform *v1.Platform
	// Progress, if not nil, receives events as layers are converted.
	Progress func(Event)
	// Context, if not nil, stops a conversion when done: the layer being
	// applied fails, and its mounts are taken down.
	Context context.Context
	Log     *slog.Logger
}

// Event reports progress on one layer.
type Event struct {
	Platform string // "" for a single image
	Layer    int    // 1-based
	Layers   int
	Phase    string // "apply", "commit", "cached", "done"
	Done     int64  // compressed source bytes read (apply)
	Total    int64  // compressed source size
}

// Stats sum up a conversion.
type Stats struct {
	Images      int
	Layers      int
	Cached      int   // layers found in the cache
	SourceBytes int64 // uncompressed tar bytes applied
	OutputBytes int64 // blob bytes of the converted layers
	Elapsed     time.Duration
}

// Converter converts images, sharing one layer cache.
type Converter struct {
	o     Options
	cache string
	tmp   string // cache dir to remove on Close, if temporary
	stats Stats
	used  map[string]bool // cache files of this converter's images
}

// New checks the options and prepares the cache directory.
func New(o Options) (*Converter, error) {
	if o.VirtualSize == 0 {
		o.VirtualSize = build.DefaultVirtualSize
	}
	if o.VirtualSize < 0 || o.VirtualSize%lsmt.SectorSize != 0 {
		return nil, fmt.Errorf("convert: virtual size %d is not a positive multiple of 512", o.VirtualSize)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	c := &Converter{o: o, used: map[string]bool{}}
	if o.CacheDir == "" {
		d, err := os.MkdirTemp(o.WorkDir, "obdfs-convert")
		if err != nil {
			return nil, err
		}
		c.cache, c.tmp = d, d
	} else {
		c.cache = filepath.Join(o.CacheDir, "convert")
		if err := os.MkdirAll(c.cache, 0o700); err != nil {
			return nil, fmt.Errorf("convert: cache %s: %w", c.cache, err)
		}
		if err := os.Chmod(c.cache, 0o700); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Stats returns the totals so far.
func (c *Converter) Stats() Stats { return c.stats }

// Close removes a temporary cache.
func (c *Converter) Close() error {
	if c.tmp != "" {
		return os.RemoveAll(c.tmp)
	}
	return nil
}

// settings is the part of the cache key that is not the source.
func (c *Converter) settings() string {
	z := "none"
	if c.o.ZFile != nil {
		z = fmt.Sprintf("%d/%d", c.o.ZFile.Algorithm, c.o.ZFile.BlockSize)
	}
	return fmt.Sprintf("engine=%s vsize=%d zfile=%s fs=%s", engineVersion, c.o.VirtualSize, z, FsType)
}

// Source is an image or an index to convert.
type Source struct {
	Image v1.Image
	Index v1.ImageIndex
}

// Convert converts src (an image or an index) and returns the same kind.
func (c *Converter) Convert(src Source) (Source, error) {
	start := time.Now()
	defer func() { c.stats.Elapsed += time.Since(start) }()
	var out Source
	var err error
	if src.Image != nil {
		out.Image, err = c.Image(src.Image, "")
	} else {
		out.Index, err = c.Index(src.Index)
	}
	if err == nil {
		err = c.prune()
	}
	return out, err
}

// prune removes the least recently used cache layers beyond CacheMax,
// sparing those this converter used.
func (c *Converter) prune() error {
	if c.o.CacheMax <= 0 || c.tmp != "" {
		return nil
	}
	paths, err := filepath.Glob(filepath.Join(c.cache, "*.layer"))
	if err != nil {
		return err
	}
	type entry struct {
		path string
		size int64
		used time.Time
	}
	var ents []entry
	var total int64
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		ents = append(ents, entry{p, fi.Size(), fi.ModTime()})
		total += fi.Size()
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].used.Before(ents[j].used) })
	for _, e := range ents {
		if total <= c.o.CacheMax {
			break
		}
		if c.used[e.path] {
			continue
		}
		if err := os.Remove(e.path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("convert: pruning the cache: %w", err)
		}
		os.Remove(e.path + ".digest")
		total -= e.size
		c.o.Log.Debug("convert: cache layer evicted", "path", e.path, "size", e.size)
	}
	return nil
}

// Index converts every image of an index (or those of Options.Platform).
func (c *Converter) Index(src v1.ImageIndex) (v1.ImageIndex, error) {
	im, err := src.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("convert: reading the index: %w", err)
	}
	mt, err := src.MediaType()
	if err != nil {
		return nil, err
	}
	out := mutate.IndexMediaType(empty.Index, mt)
	n := 0
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			c.o.Log.Info("convert: skipping a manifest that is not an image", "digest", d.Digest, "mediaType", d.MediaType)
			continue
		}
		p := d.Platform
		if p == nil || p.OS == "unknown" {
			// buildx attestations and the like: no filesystem to convert.
			c.o.Log.Info("convert: skipping a manifest without a platform", "digest", d.Digest)
			continue
		}
		if c.o.Platform != nil && !p.Satisfies(*c.o.Platform) {
			continue
		}
		img, err := src.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("convert: image %s: %w", d.Digest, err)
		}
		conv, err := c.Image(img, p.String())
		if err != nil {
			return nil, err
		}
		out = mutate.AppendManifests(out, mutate.IndexAddendum{Add: conv, Descriptor: v1.Descriptor{Platform: p, Annotations: d.Annotations}})
		n++
	}
	if n == 0 {
		want := "any platform"
		if c.o.Platform != nil {
			want = c.o.Platform.String()
		}
		return nil, fmt.Errorf("convert: the index has no image for %s", want)
	}
	return out, nil
}

// chainID is the OCI ChainID of a layer given the one below.
func chainID(below string, diffID v1.Hash) string {
	if below == "" {
		return diffID.String()
	}
	h := sha256.Sum256([]byte(below + " " + diffID.String()))
	return "sha256:" + hex.EncodeToString(h[:])
}

// Image converts one image. platform is used in progress events.
func (c *Converter) Image(src v1.Image, platform string) (v1.Image, error) {
	cfg, err := src.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("convert: reading the config: %w", err)
	}
	layers, err := src.Layers()
	if err != nil {
		return nil, fmt.Errorf("convert: reading the manifest: %w", err)
	}
	if len(layers) == 0 {
		return nil, errors.New("convert: the image has no layers")
	}
	if len(layers) > lsmt.MaxLayers {
		return nil, fmt.Errorf("convert: %d layers, overlaybd stacks at most %d", len(layers), lsmt.MaxLayers)
	}
	mt, err := src.MediaType()
	if err != nil {
		return nil, err
	}
	m, err := src.Manifest()
	if err != nil {
		return nil, fmt.Errorf("convert: reading the manifest: %w", err)
	}
	for _, d := range m.Layers {
		if _, ok := d.Annotations[remote.AnnotationBlobDigest]; ok {
			return nil, errors.New("convert: the image is already an overlaybd image (its layers carry overlaybd annotations)")
		}
	}
	docker := mt == types.DockerManifestSchema2
	layerMT, configMT := types.OCIUncompressedLayer, types.OCIConfigJSON
	if docker {
		layerMT, configMT = types.DockerUncompressedLayer, types.DockerConfigJSON
	}
	var paths []string
	var adds []mutate.Addendum
	var diffIDs []v1.Hash
	chain := ""
	for i, l := range layers {
		// The config names the diff IDs; asking the layer may mean
		// decompressing it whole once more (ggcr does for layouts). The
		// applied stream is checked against it below.
		var diffID v1.Hash
		if len(cfg.RootFS.DiffIDs) == len(layers) {
			diffID = cfg.RootFS.DiffIDs[i]
		} else if diffID, err = l.DiffID(); err != nil {
			return nil, fmt.Errorf("convert: layer %d: %w", i+1, err)
		}
		chain = chainID(chain, diffID)
		key := sha256.Sum256([]byte(chain + "\n" + c.settings()))
		path := filepath.Join(c.cache, hex.EncodeToString(key[:])+".layer")
		ev := Event{Platform: platform, Layer: i + 1, Layers: len(layers)}
		c.used[path] = true
		if _, err := os.Stat(path); err == nil {
			now := time.Now()
			os.Chtimes(path, now, now) // recently used, for the bound
			c.stats.Cached++
			ev.Phase = "cached"
			c.event(ev)
		} else if err := c.layer(l, diffID, paths, path, uuidOf(key), ev); err != nil {
			return nil, fmt.Errorf("convert: layer %d/%d (%s): %w", i+1, len(layers), diffID, err)
		}
		paths = append(paths, path)
		fl, err := cachedFileLayer(path, layerMT)
		if err != nil {
			return nil, err
		}
		d, _ := fl.Digest() // a FileLayer's digest and size never fail
		size, _ := fl.Size()
		c.stats.Layers++
		c.stats.OutputBytes += size
		diffIDs = append(diffIDs, d)
		adds = append(adds, mutate.Addendum{Layer: fl, MediaType: layerMT, Annotations: map[string]string{
			remote.AnnotationBlobDigest: d.String(),
			remote.AnnotationBlobSize:   strconv.FormatInt(size, 10),
			remote.AnnotationVersion:    remote.Version,
			remote.AnnotationFsType:     FsType,
		}})
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, mt), configMT)
	if img, err = mutate.Append(img, adds...); err != nil {
		return nil, err
	}
	out := cfg.DeepCopy()
	out.RootFS = v1.RootFS{Type: "layers", DiffIDs: diffIDs}
	if img, err = mutate.ConfigFile(img, out); err != nil {
		return nil, err
	}
	c.stats.Images++
	return img, nil
}

func (c *Converter) event(e Event) {
	if c.o.Progress != nil {
		c.o.Progress(e)
	}
}

// uuidOf derives a layer UUID from its cache key: a cached layer and the
// layers converted over it always agree on parent uuids.
func uuidOf(key [32]byte) string {
	var b [16]byte
	copy(b[:], key[:16])
	b[6] = b[6]&0x0f | 0x40 // version 4 layout, as random ones
	b[8] = b[8]&0x3f | 0x80
	return lsmt.UUIDFromBytes(b)
}

// layer converts one source layer over the converted layers below into
// the cache file out.
func (c *Converter) layer(l v1.Layer, diffID v1.Hash, below []string, out, uuid string, ev Event) error {
	var base *image.Stack
	if len(below) > 0 {
		var err error
		if base, err = image.Open(strings.Join(below, ","), image.Options{}); err != nil {
			return err
		}
		defer base.Close()
	}
	size, err := l.Size()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	ev.Phase, ev.Total = "apply", size
	cr := &countingReader{r: rc, ctx: c.o.Context, report: func(n int64) { ev.Done = n; c.event(ev) }}
	zr, err := build.OpenTar(cr)
	if err != nil {
		return err
	}
	defer zr.Close()
	if diffID.Algorithm != "sha256" {
		return fmt.Errorf("diff id %s: only sha256 is supported", diffID)
	}
	sum := sha256.New()
	tr := io.TeeReader(zr, sum)
	nl, err := build.NewLayer(build.Options{Base: base, VirtualSize: c.o.VirtualSize, UUID: uuid, WorkDir: c.o.WorkDir, Log: c.o.Log})
	if err != nil {
		return err
	}
	defer nl.Close()
	st, err := nl.Apply(tr, "layer "+strconv.Itoa(ev.Layer))
	if err != nil {
		return err
	}
	// The rest of the blob (tar padding, compression trailer) must be
	// intact too: a truncated or corrupt blob is an error, not a layer.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return fmt.Errorf("reading the end of the layer: %w", err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != diffID.Hex {
		return fmt.Errorf("the layer's content has diff id sha256:%s, the image says %s", got, diffID)
	}
	c.stats.SourceBytes += st.Bytes
	ev.Phase = "commit"
	c.event(ev)
	if err := nl.CommitFile(out, build.CommitArgs{}, layerfile.WriteOptions{ZFile: c.o.ZFile, Tar: true, Replace: true, Mode: 0o644}); err != nil {
		return err
	}
	ev.Phase = "done"
	c.event(ev)
	return nl.Close()
}

type countingReader struct {
	r      io.Reader
	ctx    context.Context
	n      int64
	last   time.Time
	report func(int64)
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.ctx != nil && r.ctx.Err() != nil {
		return 0, r.ctx.Err()
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	if now := time.Now(); now.Sub(r.last) > 100*time.Millisecond || err == io.EOF {
		r.last = now
		r.report(r.n)
	}
	return n, err
}
