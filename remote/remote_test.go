package remote

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/internal/testlayer"
	"github.com/obdfs/obdfs/test/registry"
)

// TestDockerRegistry pushes the oracle stack to Debian's docker-registry
// (open, and with htpasswd basic auth through a docker config file), mounts
// it by docker:// as lazily read layers, compares the merged disk, then stops
// the registry and reads it all again from the cache.
func TestDockerRegistry(t *testing.T) {
	files := fixtures(t, stackFiles...)
	for _, auth := range []bool{false, true} {
		t.Run(map[bool]string{false: "open", true: "htpasswd"}[auth], func(t *testing.T) {
			srv := registry.Start(t, auth)
			t.Setenv("DOCKER_CONFIG", srv.DockerConfig(t))
			o := testOptions(t)
			o.Keychain = nil // authn.DefaultKeychain reads DOCKER_CONFIG
			ref := srv.Ref("obdfs/stack:v1")
			mustPush(t, ref, files, o)

			blobs, err := Resolve(context.Background(), ref, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(blobs) != 3 {
				t.Fatalf("%d blobs, want 3", len(blobs))
			}
			for i, b := range blobs {
				if want := wrappedSum(t, files[i]); b.Digest() != want {
					t.Errorf("layer %d digest %s, want %s", i, b.Digest(), want)
				}
			}
			s, err := openStack(t, blobs)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := diskSum(s, s.Size()); err != nil || got != sumStack {
				t.Fatalf("stack content %s (err %v), want %s", got, err, sumStack)
			}
			var fetched, size int64
			for _, b := range blobs {
				fetched += b.Stats().FetchedBytes
				size += b.Size()
			}
			t.Logf("cold read of the whole disk fetched %d of %d blob bytes", fetched, size)
			closeBlobs(t, blobs)

			// Registry down: the recorded resolution and the cache serve.
			srv.Stop()
			blobs, err = Resolve(context.Background(), ref, o)
			if err != nil {
				t.Fatalf("resolve with the registry stopped: %v", err)
			}
			defer closeBlobs(t, blobs)
			s, err = openStack(t, blobs)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := diskSum(s, s.Size()); err != nil || got != sumStack {
				t.Fatalf("from cache: content %s (err %v), want %s", got, err, sumStack)
			}
			for _, b := range blobs {
				if st := b.Stats(); st.FetchedBytes != 0 {
					t.Errorf("%s: fetched %d bytes with the registry stopped", b.Name(), st.FetchedBytes)
				}
			}
		})
	}
}

// TestBasicAuthRequired checks that the htpasswd registry refuses anonymous
// pulls with a clear error (and that the error is not masked by the cache).
func TestBasicAuthRequired(t *testing.T) {
	files := fixtures(t, "b/base.lz4.zfile")
	srv := registry.Start(t, true)
	o := testOptions(t)
	o.Keychain = srv.Keychain()
	ref := srv.Ref("obdfs/base:v1")
	mustPush(t, ref, files, o)
	o.Keychain = authn.NewMultiKeychain()
	_, err := Resolve(context.Background(), ref, o)
	if err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Fatalf("anonymous resolve: %v, want an authorization error", err)
	}
}

func TestRepoBlobURL(t *testing.T) {
	files := fixtures(t, "b/base.lz4.zfile")
	host, f := inproc(t)
	o := testOptions(t)
	mustPush(t, "docker://"+host+"/obdfs/base:v1", files, o)
	d := wrappedSum(t, files[0])
	for _, size := range []int64{0, -1} {
		o := testOptions(t)
		if size < 0 {
			st, _ := os.Stat(files[0])
			size = tarwrapSize(st.Size())
		}
		b, err := OpenBlob(context.Background(), "http://"+host+"/v2/obdfs/base/blobs", d, size, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := blobSum(t, b); got != d {
			t.Errorf("size %d: content %s, want %s", size, got, d)
		}
		b.Close()
	}
	_ = f
	for _, bad := range []string{"ftp://x/v2/a/blobs", "https://host/a/blobs", "https://host/v2//blobs", "http:///v2/a/blobs"} {
		if _, err := OpenBlob(context.Background(), bad, d, 1, testOptions(t)); err == nil {
			t.Errorf("OpenBlob(%q) succeeded", bad)
		}
	}
}

func tarwrapSize(n int64) int64 { return 1536 + (n+511)/512*512 + 1024 }

func TestNotOverlaybd(t *testing.T) {
	host, _ := inproc(t)
	img, err := random.Image(1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host + "/plain/img:v1")
	if err := ggcrremote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(context.Background(), "docker://"+host+"/plain/img:v1", testOptions(t))
	if !errors.Is(err, ErrNotOverlaybd) {
		t.Fatalf("err = %v, want ErrNotOverlaybd", err)
	}
	t.Log(err)
	// The answer "not overlaybd" must not be replaced by an old resolution.
	if _, err := Resolve(context.Background(), "docker://"+host+"/plain/missing:v1", testOptions(t)); err == nil {
		t.Fatal("resolving a missing tag succeeded")
	}
	for _, bad := range []string{"foo", "docker://", "oci:/nonexistent/dir"} {
		if _, err := Resolve(context.Background(), bad, testOptions(t)); err == nil {
			t.Errorf("Resolve(%q) succeeded", bad)
		}
	}
}

// TestIndexAndLayout resolves a multi-arch index by platform, in a registry
// and in an OCI layout.
func TestIndexAndLayout(t *testing.T) {
	zf := fixture(t, "b/base.lz4.zfile")
	l2 := fixture(t, "d/l2.lsmt")
	host, _ := inproc(t)
	o := testOptions(t)
	amdRef := "docker://" + host + "/multi/img:amd64"
	armRef := "docker://" + host + "/multi/img:arm64"
	mustPush(t, amdRef, []string{zf}, o)
	oArm := o
	oArm.Platform = "linux/arm64"
	if _, err := Push(context.Background(), armRef, []string{zf, l2}, PushOptions{Options: oArm, DockerMediaTypes: true}); err != nil {
		t.Fatal(err)
	}
	get := func(r string) v1.Image {
		ref, _ := name.ParseReference(strings.TrimPrefix(r, "docker://"))
		img, err := ggcrremote.Image(ref)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	amd, arm := get(amdRef), get(armRef)
	// An attestation-like entry first, to check it is skipped.
	junk, _ := random.Image(10, 1)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: junk, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	idxRef, _ := name.ParseReference(host + "/multi/img:latest")
	if err := ggcrremote.WriteIndex(idxRef, idx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: "v1"})); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{"docker://" + host + "/multi/img:latest", "oci:" + dir + ":v1", "oci:" + dir} {
		for plat, want := range map[string]int{"": 1, "linux/amd64": 1, "linux/arm64": 2} {
			o := testOptions(t)
			o.Platform = plat
			blobs, err := Resolve(context.Background(), spec, o)
			if err != nil {
				t.Fatalf("%s %s: %v", spec, plat, err)
			}
			if len(blobs) != want {
				t.Errorf("%s %s: %d layers, want %d", spec, plat, len(blobs), want)
			}
			if got := blobSum(t, blobs[0]); got != wrappedSum(t, zf) {
				t.Errorf("%s %s: layer 0 content %s", spec, plat, got)
			}
			closeBlobs(t, blobs)
		}
	}
	o.Platform = "linux/s390x"
	if _, err := Resolve(context.Background(), "oci:"+dir+":v1", o); err == nil {
		t.Error("no s390x image, but Resolve succeeded")
	}
	if _, err := Resolve(context.Background(), "oci:"+dir+":nope", testOptions(t)); err == nil {
		t.Error("missing layout tag, but Resolve succeeded")
	}
}

// TestPushedManifest checks what ACI/overlaybd read: media types,
// annotations, diff_ids.
func TestPushedManifest(t *testing.T) {
	files := fixtures(t, "b/base.lz4.zfile", "d/l2.lsmt")
	host, _ := inproc(t)
	for _, docker := range []bool{false, true} {
		r := host + "/obd/m:v1"
		if _, err := Push(context.Background(), r, files, PushOptions{Options: testOptions(t), DockerMediaTypes: docker, FsType: "ext4"}); err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(r)
		img, err := ggcrremote.Image(ref)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		cf, _ := img.ConfigFile()
		wantMT := types.OCIUncompressedLayer
		if docker {
			wantMT = types.DockerUncompressedLayer
		}
		for i, l := range m.Layers {
			if l.MediaType != wantMT {
				t.Errorf("layer %d media type %s, want %s", i, l.MediaType, wantMT)
			}
			if l.Annotations[AnnotationBlobDigest] != l.Digest.String() || l.Annotations[AnnotationVersion] != "0.1.0" ||
				l.Annotations[AnnotationBlobSize] == "" || l.Annotations[AnnotationFsType] != "ext4" {
				t.Errorf("layer %d annotations %v", i, l.Annotations)
			}
			if cf.RootFS.DiffIDs[i] != l.Digest {
				t.Errorf("diff_id %d = %s, want the blob digest %s", i, cf.RootFS.DiffIDs[i], l.Digest)
			}
			if l.Digest.String() != wrappedSum(t, files[i]) {
				t.Errorf("layer %d digest %s is not the PAX-wrapped file", i, l.Digest)
			}
		}
		if cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("config platform %s/%s", cf.OS, cf.Architecture)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("not a layer at all"), 0o644)
	if _, err := Push(context.Background(), host+"/obd/bad:v1", []string{bad}, PushOptions{Options: testOptions(t)}); err == nil {
		t.Error("pushing a non-overlaybd file succeeded")
	}
}

// TestSingleFetch: concurrent misses on one range make one GET; distinct
// ranges are fetched in parallel; the last range is clamped to the blob.
func TestSingleFetch(t *testing.T) {
	files := fixtures(t, "b/base.lz4.zfile")
	host, f := inproc(t)
	o := testOptions(t)
	o.RefillSize = 64 << 10
	mustPush(t, "docker://"+host+"/sf/img:v1", files, o)
	blobs, err := Resolve(context.Background(), "docker://"+host+"/sf/img:v1", o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeBlobs(t, blobs)
	b := blobs[0]
	f.latency = 30 * time.Millisecond
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			p := make([]byte, 4096)
			if _, err := b.ReadAt(p, 70_000); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if g := f.gets.Load(); g != 1 {
		t.Errorf("16 concurrent reads of one chunk made %d GETs, want 1", g)
	}
	// Distinct chunks from several readers: several GETs in flight.
	f.gets.Store(0)
	for i := range 4 {
		wg.Go(func() {
			p := make([]byte, 100)
			if _, err := b.ReadAt(p, int64(2+i)*(64<<10)+10); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if f.maxIn.Load() < 2 {
		t.Errorf("at most %d GETs were in flight, want several", f.maxIn.Load())
	}
	// Last bytes: the refill would reach past EOF; the registry answers 416
	// to that, so this only works if the range is clamped.
	p := make([]byte, 10)
	n, err := b.ReadAt(p, b.Size()-4)
	if n != 4 || err == nil {
		t.Errorf("read at end: n=%d err=%v, want 4, EOF", n, err)
	}
	if got := blobSum(t, b); got != b.Digest() {
		t.Errorf("content %s, want %s", got, b.Digest())
	}
}

// TestBlobReaderAt checks a lazily fetched blob against the io.ReaderAt
// contract (testing/iotest), as every other reader layer is in layerfile.
func TestBlobReaderAt(t *testing.T) {
	files := fixtures(t, "d/l3.lsmt")
	host, _ := inproc(t)
	o := testOptions(t)
	o.RefillSize = 4 << 10 // many chunks, so reads cross chunk boundaries
	mustPush(t, "docker://"+host+"/ra/img:v1", files, o)
	blobs, err := Resolve(context.Background(), "docker://"+host+"/ra/img:v1", o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeBlobs(t, blobs)
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	want := testlayer.TarWrap(raw, 0o644)
	testlayer.TestReaderAt(t, blobs[0], want, max(0, int64(len(want))-16<<10-100))
}

// TestPushProgress: Push reports upload progress through PushOptions.Progress,
// every report is in range, and the last one, made before Push returns,
// covers the whole upload.
func TestPushProgress(t *testing.T) {
	host, _ := inproc(t)
	o := testOptions(t)
	var calls int
	var last [2]int64
	_, err := Push(context.Background(), "docker://"+host+"/p/progress:v1", fixtures(t, "b/base.lz4.zfile"), PushOptions{
		Options: o,
		Progress: func(complete, total int64) {
			calls++
			if complete < 0 || total <= 0 || complete > total {
				t.Errorf("progress %d/%d out of range", complete, total)
			}
			last = [2]int64{complete, total}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 || last[0] != last[1] {
		t.Fatalf("%d progress calls, last %d/%d: want at least one, ending complete", calls, last[0], last[1])
	}
}
