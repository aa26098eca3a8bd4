package convert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/internal/atomicfile"
)

// fileLayer is a converted (tar-wrapped) layer file as a blob. It counts
// as an uncompressed tar, so its diff ID is its digest, as ACI's converter
// writes it.
type fileLayer struct {
	path   string
	mt     types.MediaType
	size   int64
	digest v1.Hash
}

func newFileLayer(path string, mt types.MediaType) (*fileLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &fileLayer{path: path, mt: mt, size: n,
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, nil
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	return os.Open(l.path)
}

// cachedFileLayer is newFileLayer with the digest remembered beside the
// cache file (PATH.digest: "sha256:HEX SIZE"), so a cached layer is not
// read whole again for each image that uses it.
func cachedFileLayer(path string, mt types.MediaType) (*fileLayer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(path + ".digest"); err == nil {
		var d string
		var size int64
		if _, err := fmt.Sscanf(string(b), "%s %d", &d, &size); err == nil && size == fi.Size() {
			if h, err := v1.NewHash(d); err == nil {
				return &fileLayer{path: path, mt: mt, size: size, digest: h}, nil
			}
		}
	}
	l, err := newFileLayer(path, mt)
	if err != nil {
		return nil, err
	}
	// Written after the layer file is complete; a torn write fails to parse
	// or mismatches the size, and the file is hashed again.
	// Best effort: without it the file is only hashed again.
	_ = atomicfile.WriteFile(path+".digest", []byte(fmt.Sprintf("%s %d\n", l.digest, l.size)), 0o600)
	return l, nil
}

// linkBlobs hard-links the converted layer files of s into the blob store
// of an OCI layout at dir, which then skips copying them. Failures (another
// filesystem, say) only mean the blobs get copied.
func linkBlobs(dir string, s Source) {
	var imgs []v1.Image
	if s.Image != nil {
		imgs = append(imgs, s.Image)
	}
	if s.Index != nil {
		if im, err := s.Index.IndexManifest(); err == nil {
			for _, d := range im.Manifests {
				if img, err := s.Index.Image(d.Digest); err == nil {
					imgs = append(imgs, img)
				}
			}
		}
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return
	}
	for _, img := range imgs {
		ls, err := img.Layers()
		if err != nil {
			continue
		}
		for _, l := range ls {
			if fl, ok := l.(*fileLayer); ok {
				os.Link(fl.path, filepath.Join(blobs, fl.digest.Hex))
			}
		}
	}
}
