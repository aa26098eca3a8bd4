package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/build"
	"github.com/obdfs/obdfs/internal/imagetree"
	"github.com/obdfs/obdfs/internal/leakcheck"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/treetest"
	"github.com/obdfs/obdfs/remote"
	"github.com/obdfs/obdfs/zfile"
)

// rootUse is what the root-only tests here do with root.
const rootUse = "FUSE, loop devices, ext4 mounts, mknod, chown"

// busyboxTar is a real OS tree: busybox-static and its applet links.
func busyboxTar(t *testing.T) []byte {
	t.Helper()
	needs.Commands(t, "busybox")
	dir := t.TempDir()
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	if out, err := exec.Command(filepath.Join(dir, "bin/busybox"), "--install", "-s", filepath.Join(dir, "bin")).CombinedOutput(); err != nil {
		t.Fatalf("busybox --install: %v: %s", err, out)
	}
	var b bytes.Buffer
	if err := build.TarDir(dir, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var runtimeConfig = v1.Config{
	Env:        []string{"PATH=/bin:/usr/bin", "GREETING=hello"},
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{"echo $GREETING"},
	WorkingDir: "/tmp",
	User:       "1234:5678",
	Labels:     map[string]string{"org.example.test": "convert"},
}

// sourceImage builds a gzip-layered image from tars, with a history entry
// per layer and the runtime config above.
func sourceImage(t *testing.T, tars [][]byte, docker bool, arch string) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	lmt := types.OCILayer
	if docker {
		img = mutate.MediaType(empty.Image, types.DockerManifestSchema2)
		img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
		lmt = types.DockerLayer
	}
	for i, b := range tars {
		b := b
		opts := []tarball.LayerOption{tarball.WithMediaType(lmt)}
		if arch == "arm64" { // zstd layers too
			opts = []tarball.LayerOption{tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd)}
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, opts...)
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{
			CreatedBy: "layer " + string(rune('1'+i)), Created: v1.Time{Time: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config = runtimeConfig
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func writeLayout(t *testing.T, dir, tag string, s Source) {
	t.Helper()
	if err := Write(context.Background(), "oci:"+dir+":"+tag, s, RegistryOptions{}); err != nil {
		t.Fatal(err)
	}
}

// umociTree unpacks oci:dir:tag with umoci and snapshots its rootfs.
func umociTree(t *testing.T, dir, tag string) map[string]treetest.Entry {
	t.Helper()
	needs.Commands(t, "umoci")
	bundle := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.Command("umoci", "unpack", "--image", dir+":"+tag, bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v: %s", err, out)
	}
	snap, err := treetest.Snapshot(filepath.Join(bundle, "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// obdfsTree mounts a converted image through obdfs (FUSE, loop, ext4) and
// snapshots it.
func obdfsTree(t *testing.T, spec string) map[string]treetest.Entry {
	t.Helper()
	return imagetree.Snapshot(t, spec, remote.Options{Platform: "linux/amd64"})
}

func compareTrees(t *testing.T, want, got map[string]treetest.Entry) {
	t.Helper()
	if len(want) < 10 {
		t.Fatalf("reference tree has only %d entries", len(want))
	}
	for _, d := range treetest.Diff(want, got, 30) {
		t.Error(d)
	}
}

func newConverter(t *testing.T, cache string) *Converter {
	t.Helper()
	c, err := New(Options{VirtualSize: 1 << 30, CacheDir: cache, WorkDir: t.TempDir(),
		ZFile: &zfile.WriterOptions{Algorithm: zfile.LZ4, BlockSize: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func convertSpec(t *testing.T, c *Converter, src, dst string) Source {
	t.Helper()
	s, err := Open(context.Background(), src, RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Convert(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(context.Background(), dst, out, RegistryOptions{}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConvertMatchesUmoci converts an image (busybox tree + the generated
// layers covering every entry type and whiteout case) and compares the
// mounted result entry by entry with umoci's unpack of the source.
func TestConvertMatchesUmoci(t *testing.T) {
	needs.Root(t, rootUse)
	leaks := leakcheck.Take()
	defer leaks.Check(t)
	tmp := t.TempDir()
	tars := append([][]byte{busyboxTar(t)}, treetest.Layers()...)
	srcDir, outDir := filepath.Join(tmp, "src"), filepath.Join(tmp, "out")
	src := sourceImage(t, tars, false, "amd64")
	writeLayout(t, srcDir, "v1", Source{Image: src})
	want := umociTree(t, srcDir, "v1")

	c := newConverter(t, filepath.Join(tmp, "cache"))
	out := convertSpec(t, c, "oci:"+srcDir+":v1", "oci:"+outDir+":v1")
	compareTrees(t, want, obdfsTree(t, "oci:"+outDir+":v1"))
	checkImage(t, src, out.Image, types.OCIUncompressedLayer)
	// The layout's layer blobs are the cache files, linked, not copied.
	m, err := out.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(outDir, "blobs", "sha256", l.Digest.Hex), &st); err != nil || st.Nlink != 2 {
			t.Errorf("blob %s: nlink %d, err %v; want a link to the cache file", l.Digest, st.Nlink, err)
		}
	}
	if s := c.Stats(); s.Layers != 4 || s.Cached != 0 || s.SourceBytes == 0 {
		t.Errorf("stats %+v", s)
	}

	// A second image over the same first three layers converts only its
	// last layer; it reads back as umoci unpacks it.
	extra := treetest.Tar([]treetest.TarEntry{{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "extra", Mode: 0o644,
		ModTime: time.Date(2025, 5, 5, 5, 5, 5, 5, time.UTC)}, Body: []byte("only in v2")}})
	src2 := sourceImage(t, append(tars[:3:3], extra), false, "amd64")
	writeLayout(t, srcDir, "v2", Source{Image: src2})
	convertSpec(t, c, "oci:"+srcDir+":v2", "oci:"+outDir+":v2")
	if s := c.Stats(); s.Layers != 8 || s.Cached != 3 {
		t.Errorf("second image: stats %+v, want 3 of 4 layers from the cache", s)
	}
	compareTrees(t, umociTree(t, srcDir, "v2"), obdfsTree(t, "oci:"+outDir+":v2"))

	// Converting the result again is refused.
	again, err := Open(context.Background(), "oci:"+outDir+":v1", RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Convert(again); err == nil || !strings.Contains(err.Error(), "already an overlaybd image") {
		t.Errorf("converting an overlaybd image: %v", err)
	}
}

// checkImage checks what overlaybd and ACI read: layer media type and
// annotations, diff IDs = blob digests, and the source's runtime config and
// history carried over.
func checkImage(t *testing.T, src, img v1.Image, layerMT types.MediaType) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	scf, _ := src.ConfigFile()
	if !reflect.DeepEqual(cf.Config, scf.Config) || !reflect.DeepEqual(cf.History, scf.History) ||
		cf.OS != scf.OS || cf.Architecture != scf.Architecture {
		t.Errorf("config not carried over:\n got %+v %+v\nwant %+v %+v", cf.Config, cf.History, scf.Config, scf.History)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		t.Fatalf("%d diff ids for %d layers", len(cf.RootFS.DiffIDs), len(m.Layers))
	}
	for i, l := range m.Layers {
		if l.MediaType != layerMT || cf.RootFS.DiffIDs[i] != l.Digest ||
			l.Annotations[remote.AnnotationBlobDigest] != l.Digest.String() ||
			l.Annotations[remote.AnnotationFsType] != "ext4" || l.Annotations[remote.AnnotationBlobSize] == "" {
			t.Errorf("layer %d: %+v (diff id %s)", i, l, cf.RootFS.DiffIDs[i])
		}
	}
}

// TestConvertDockerArchiveAndIndex converts a `docker save` archive and a
// two-platform index, all platforms and one.
func TestConvertDockerArchiveAndIndex(t *testing.T) {
	needs.Root(t, rootUse)
	tmp := t.TempDir()
	tars := treetest.Layers()
	src := sourceImage(t, tars, true, "amd64")
	archive := filepath.Join(tmp, "image.tar")
	tag, _ := name.NewTag("example.test/app:v1")
	if err := tarball.WriteToFile(archive, tag, src); err != nil {
		t.Fatal(err)
	}
	// The reference: the same image as an OCI layout, unpacked by umoci.
	refDir := filepath.Join(tmp, "ref")
	writeLayout(t, refDir, "v1", Source{Image: sourceImage(t, tars, false, "amd64")})
	want := umociTree(t, refDir, "v1")

	c := newConverter(t, "")
	out := convertSpec(t, c, archive, "oci:"+filepath.Join(tmp, "out")+":docker")
	checkImage(t, src, out.Image, types.DockerUncompressedLayer)
	compareTrees(t, want, obdfsTree(t, "oci:"+filepath.Join(tmp, "out")+":docker"))

	// amd64 = all three layers, arm64 = the first two.
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: src, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: sourceImage(t, tars[:2], false, "arm64"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	idxDir := filepath.Join(tmp, "idx")
	writeLayout(t, idxDir, "multi", Source{Index: idx})
	all := convertSpec(t, c, "oci:"+idxDir+":multi", "oci:"+filepath.Join(tmp, "out")+":multi")
	im, err := all.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("%d manifests, want 2", len(im.Manifests))
	}
	for _, d := range im.Manifests {
		img, err := all.Index.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := img.Layers()
		wantN := map[string]int{"amd64": 3, "arm64": 2}[d.Platform.Architecture]
		if len(ls) != wantN {
			t.Errorf("%s: %d layers, want %d", d.Platform, len(ls), wantN)
		}
	}
	// The converted index is mounted by platform like any overlaybd image.
	compareTrees(t, want, obdfsTree(t, "oci:"+filepath.Join(tmp, "out")+":multi"))
	// arm64 (zstd source layers) against the same two tars extracted by Apply.
	ref := t.TempDir()
	for _, l := range tars[:2] {
		if _, err := build.Apply(ref, bytes.NewReader(l), "reference"); err != nil {
			t.Fatal(err)
		}
	}
	wantArm, err := treetest.Snapshot(ref)
	if err != nil {
		t.Fatal(err)
	}
	compareTrees(t, wantArm, imagetree.Snapshot(t, "oci:"+filepath.Join(tmp, "out")+":multi", remote.Options{Platform: "linux/arm64"}))

	one, err := New(Options{VirtualSize: 1 << 30, WorkDir: tmp, Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	s, _ := Open(context.Background(), "oci:"+idxDir+":multi", RegistryOptions{})
	sel, err := one.Convert(s)
	if err != nil {
		t.Fatal(err)
	}
	if im, _ := sel.Index.IndexManifest(); len(im.Manifests) != 1 || im.Manifests[0].Platform.Architecture != "arm64" {
		t.Errorf("--platform linux/arm64: %+v", im)
	}
}

// TestConvertRefusesEscapes: a source layer with an escaping entry fails
// the conversion, nothing is cached, nothing written outside.
func TestConvertRefusesEscapes(t *testing.T) {
	needs.Root(t, rootUse)
	for name, tarball := range treetest.Escapes() {
		t.Run(name, func(t *testing.T) {
			cache := t.TempDir()
			c := newConverter(t, cache)
			_, err := c.Convert(Source{Image: sourceImage(t, [][]byte{treetest.Layers()[0], tarball}, false, "amd64")})
			if !errors.Is(err, build.ErrEscape) {
				t.Fatalf("err = %v, want build.ErrEscape", err)
			}
			ents, _ := filepath.Glob(filepath.Join(cache, "convert", "*.layer"))
			if len(ents) != 1 {
				t.Errorf("cache holds %d entries, want only the good first layer", len(ents))
			}
		})
	}
}

// TestConvertChecksDiffIDs: a layer whose content does not match the diff
// id the config names fails the conversion and is not cached.
func TestConvertChecksDiffIDs(t *testing.T) {
	needs.Root(t, rootUse)
	img := sourceImage(t, treetest.Layers()[:2], false, "amd64")
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[1] = cf.RootFS.DiffIDs[0]
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	if _, err := newConverter(t, cache).Convert(Source{Image: img}); err == nil || !strings.Contains(err.Error(), "diff id") {
		t.Fatalf("err = %v, want a diff id mismatch", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(cache, "convert", "*.layer")); len(ents) != 1 {
		t.Errorf("cache holds %d layers, want only the good first one", len(ents))
	}
}

// TestConvertSymlinkedParentsLikeUmoci: entries written through symlinks
// that point outside the root (absolute, and by "..") land inside the
// root, where the container sees them, exactly as umoci puts them; nothing
// appears at the host path.
func TestConvertSymlinkedParentsLikeUmoci(t *testing.T) {
	needs.Root(t, rootUse)
	tmp := t.TempDir()
	outside := filepath.Join(tmp, "host-side")
	tars := [][]byte{treetest.Layers()[0], treetest.EscapeBySymlink(outside)}
	srcDir := filepath.Join(tmp, "src")
	writeLayout(t, srcDir, "v1", Source{Image: sourceImage(t, tars, false, "amd64")})
	want := umociTree(t, srcDir, "v1")
	c := newConverter(t, "")
	convertSpec(t, c, "oci:"+srcDir+":v1", "oci:"+filepath.Join(tmp, "out")+":v1")
	got := obdfsTree(t, "oci:"+filepath.Join(tmp, "out")+":v1")
	compareTrees(t, want, got)
	if _, ok := got[strings.TrimPrefix(outside, "/")+"/pwned-up"]; !ok {
		t.Error("the entry written through the symlinks is not inside the root")
	}
	if _, err := os.Stat(outside); !os.IsNotExist(err) {
		t.Errorf("%s exists on the host: %v", outside, err)
	}
}

// TestConvertCacheBound: beyond CacheMax the least recently used layers go,
// never those of the image just converted.
func TestConvertCacheBound(t *testing.T) {
	needs.Root(t, rootUse)
	cache := t.TempDir()
	layers := treetest.Layers()
	conv := func(tars [][]byte) {
		c, err := New(Options{VirtualSize: 1 << 30, CacheDir: cache, CacheMax: 1, WorkDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Convert(Source{Image: sourceImage(t, tars, false, "amd64")}); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		l, _ := filepath.Glob(filepath.Join(cache, "convert", "*.layer"))
		return len(l)
	}
	conv(layers[:2])
	if n := count(); n != 2 {
		t.Fatalf("%d layers cached after the first image, want its 2", n)
	}
	other := treetest.Tar([]treetest.TarEntry{{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "x", Mode: 0o644}, Body: []byte("x")}})
	conv([][]byte{other}) // another chain: the first image's layers are evicted
	if n := count(); n != 1 {
		t.Fatalf("%d layers cached after the second image, want only its 1", n)
	}
	if d, _ := filepath.Glob(filepath.Join(cache, "convert", "*.digest")); len(d) != 1 {
		t.Errorf("%d digest notes left, want 1", len(d))
	}
}
