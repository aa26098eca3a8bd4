package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/tarwrap"
)

// PushOptions configure Push.
type PushOptions struct {
	Options
	// DockerMediaTypes writes a Docker schema2 manifest (the ACI convertor's
	// default) instead of an OCI one.
	DockerMediaTypes bool
	// FsType, if set, is written as the blob-fs-type annotation (ext4, erofs).
	FsType string
	// Progress, if not nil, is called with the bytes uploaded so far.
	Progress func(complete, total int64)
}

// Push publishes committed overlaybd layer files (bottom first) as an image
// that overlaybd and ACI consume (docs/image-config.md §3): each blob is
// the layer tar-wrapped (wrapped here with overlaybd's PAX form unless the
// file already is), with the uncompressed-tar media type, the blob-digest,
// blob-size and version annotations, and a config whose diff_ids are the
// blob digests. ref is [docker://]HOST/REPO[:TAG]. It returns the manifest
// digest.
func Push(ctx context.Context, ref string, layers []string, o PushOptions) (string, error) {
	opt, err := o.Options.withDefaults()
	if err != nil {
		return "", err
	}
	nopts := []name.Option{name.WeakValidation}
	if opt.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(strings.TrimPrefix(ref, "docker://"), nopts...)
	if err != nil {
		return "", fmt.Errorf("push %q: %w", ref, err)
	}
	if len(layers) == 0 {
		return "", fmt.Errorf("push %s: no layers", ref)
	}
	plat, err := v1.ParsePlatform(opt.Platform)
	if err != nil {
		return "", fmt.Errorf("platform %q: %w", opt.Platform, err)
	}
	layerMT, manifestMT, configMT := types.OCIUncompressedLayer, types.OCIManifestSchema1, types.OCIConfigJSON
	if o.DockerMediaTypes {
		layerMT, manifestMT, configMT = types.DockerUncompressedLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	}
	img := mutate.MediaType(empty.Image, manifestMT)
	img = mutate.ConfigMediaType(img, configMT)
	cfg := &v1.ConfigFile{
		Architecture: plat.Architecture, OS: plat.OS, Variant: plat.Variant,
		RootFS: v1.RootFS{Type: "layers"},
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", err
	}
	for _, path := range layers {
		l, err := NewFileLayer(path, layerMT)
		if err != nil {
			return "", fmt.Errorf("push %s: %w", ref, err)
		}
		ann := map[string]string{
			AnnotationBlobDigest: l.digest.String(),
			AnnotationBlobSize:   strconv.FormatInt(l.size, 10),
			AnnotationVersion:    Version,
		}
		if o.FsType != "" {
			ann[AnnotationFsType] = o.FsType
		}
		cl, err := partial.CompressedToLayer(l)
		if err != nil {
			return "", err
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: cl, Annotations: ann, MediaType: layerMT,
			History: v1.History{CreatedBy: "obdfs push", Comment: path}})
		if err != nil {
			return "", err
		}
	}
	ropts := []ggcrremote.Option{
		ggcrremote.WithContext(ctx),
		ggcrremote.WithAuthFromKeychain(opt.Keychain),
		ggcrremote.WithTransport(baseTransport(opt)),
		ggcrremote.WithUserAgent(opt.UserAgent),
	}
	if o.Progress != nil {
		popt, wait := ProgressOption(o.Progress)
		defer wait()
		ropts = append(ropts, popt)
	}
	if err := ggcrremote.Write(r, img, ropts...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// ProgressOption is a go-containerregistry remote option that passes a
// write's upload progress to fn. Call wait once the write has returned (ggcr
// closes the update channel then): it returns after the last call of fn.
func ProgressOption(fn func(complete, total int64)) (opt ggcrremote.Option, wait func()) {
	ch := make(chan v1.Update, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for u := range ch {
			fn(u.Complete, u.Total)
		}
	}()
	return ggcrremote.WithProgress(ch), func() { <-done }
}

// FileLayer is a layer file as a blob: the file itself when it is already
// tar-wrapped, else header + file + trailer, streamed (never held in memory).
// It counts as an uncompressed tar: its diff ID is its digest, as ACI's
// convertor writes it.
type FileLayer struct {
	path   string
	mt     types.MediaType
	header []byte // nil when the file is already wrapped
	trail  []byte
	size   int64 // blob size
	digest v1.Hash
}

// WrappedFileLayer is the tar-wrapped layer file at path as a blob whose
// size and digest are known already (they are not checked).
func WrappedFileLayer(path string, mt types.MediaType, size int64, digest v1.Hash) *FileLayer {
	return &FileLayer{path: path, mt: mt, size: size, digest: digest}
}

// NewFileLayer is the layer file at path as a blob of media type mt; it
// reads the file whole for the digest.
func NewFileLayer(path string, mt types.MediaType) (*FileLayer, error) {
	f, err := layerfile.OpenLayerPath(path, layerfile.Options{})
	if err != nil {
		return nil, err
	}
	wrapped, size := f.Kind.Tar, f.Size
	f.Close()
	l := &FileLayer{path: path, mt: mt, size: size}
	if !wrapped {
		l.header = tarwrap.Header(size, 0o644)
		l.trail = tarwrap.Trailer(size)
		l.size = int64(len(l.header)) + size + int64(len(l.trail))
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", path, err)
	}
	if n != l.size {
		return nil, fmt.Errorf("layer %s: changed while being read", path)
	}
	l.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	return l, nil
}

// Path is the layer file's path.
func (l *FileLayer) Path() string { return l.path }

func (l *FileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *FileLayer) DiffID() (v1.Hash, error)            { return l.digest, nil }
func (l *FileLayer) Size() (int64, error)                { return l.size, nil }
func (l *FileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func (l *FileLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	if l.header == nil {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(l.header), f, bytes.NewReader(l.trail)), f}, nil
}

// Uncompressed is the blob too: it is an uncompressed tar.
func (l *FileLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
