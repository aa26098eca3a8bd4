package registry

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/build"
	"github.com/obdfs/obdfs/internal/imagetree"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/treetest"
	"github.com/obdfs/obdfs/remote"
)

// TestConvertRegistryToRegistry: obdfs convert docker:// → docker:// of a
// two-platform index on a real registry; each converted platform, opened
// lazily from the registry and mounted (FUSE, loop, ext4), holds the tree
// its source layers make.
func TestConvertRegistryToRegistry(t *testing.T) {
	needs.Root(t, "FUSE, loop devices, ext4 mounts")
	srv := Start(t, false)
	layers := treetest.Layers()
	img := func(tars [][]byte, arch string) v1.Image {
		i := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		for _, b := range tars {
			b := b
			l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
				tarball.WithMediaType(types.OCILayer))
			if err != nil {
				t.Fatal(err)
			}
			if i, err = mutate.AppendLayers(i, l); err != nil {
				t.Fatal(err)
			}
		}
		cf, _ := i.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", arch
		i, err := mutate.ConfigFile(i, cf)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img(layers, "amd64"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: img(layers[:1], "arm64"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	ref, err := name.ParseReference(srv.Host+"/src/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcr.WriteIndex(ref, idx, ggcr.WithContext(context.Background())); err != nil {
		t.Fatal(err)
	}
	out := mustObdfs(t, nil, "convert", "-z", "--insecure", "--vsize", "1GiB", "--no-cache",
		srv.Ref("src/app:v1"), srv.Ref("obd/app:v1"))
	if !strings.Contains(out, "2 image(s), 4 layers") {
		t.Errorf("summary: %s", out)
	}
	for arch, n := range map[string]int{"amd64": 3, "arm64": 1} {
		want := t.TempDir()
		for _, l := range layers[:n] {
			if _, err := build.Apply(want, bytes.NewReader(l), arch); err != nil {
				t.Fatal(err)
			}
		}
		wantSnap, err := treetest.Snapshot(want)
		if err != nil {
			t.Fatal(err)
		}
		got := imagetree.Snapshot(t, srv.Ref("obd/app:v1"), remote.Options{
			Insecure: true, Platform: "linux/" + arch, CacheDir: filepath.Join(t.TempDir(), "cache")})
		for _, d := range treetest.Diff(wantSnap, got, 20) {
			t.Errorf("%s: %s", arch, d)
		}
	}
}
