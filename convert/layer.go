package convert

import (
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/internal/atomicfile"
	"github.com/obdfs/obdfs/remote"
)

// cachedFileLayer is the converted (tar-wrapped) layer file at path as a
// blob, with its digest remembered beside it (PATH.digest: "sha256:HEX
// SIZE"), so a cached layer is not read whole again for each image that
// uses it.
func cachedFileLayer(path string, mt types.MediaType) (*remote.FileLayer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(path + ".digest"); err == nil {
		var d string
		var size int64
		if _, err := fmt.Sscanf(string(b), "%s %d", &d, &size); err == nil && size == fi.Size() {
			if h, err := v1.NewHash(d); err == nil {
				return remote.WrappedFileLayer(path, mt, size, h), nil
			}
		}
	}
	l, err := remote.NewFileLayer(path, mt)
	if err != nil {
		return nil, err
	}
	d, _ := l.Digest() // a FileLayer's digest and size never fail
	size, _ := l.Size()
	if size != fi.Size() {
		return nil, fmt.Errorf("%s: converted layer is not tar-wrapped", path)
	}
	// Written after the layer file is complete; a torn write fails to parse
	// or mismatches the size, and the file is hashed again.
	// Best effort: without it the file is only hashed again.
	_ = atomicfile.WriteFile(path+".digest", []byte(fmt.Sprintf("%s %d\n", d, size)), 0o600)
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
			if fl, ok := l.(*remote.FileLayer); ok {
				d, _ := fl.Digest()
				os.Link(fl.Path(), filepath.Join(blobs, d.Hex))
			}
		}
	}
}
