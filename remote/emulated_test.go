package remote

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/internal/testlayer"
	"github.com/obdfs/obdfs/test/registry"
)

// These tests run against test/registry's Emulator: bearer tokens from a
// separate token server, tokens that expire, redirects of blob GETs to an
// object store, 429 with Retry-After, a registry ignoring Range. Each checks
// the merged disk against the oracle and that the cache holds nothing wrong.

const stackRepo = "obdfs/stack"

// emulated starts an emulator with the oracle stack pushed to stackRepo:v1.
func emulated(t *testing.T, cfg registry.EmulatorConfig) *registry.Emulator {
	t.Helper()
	files := fixtures(t, stackFiles...)
	e := registry.Emulate(t)
	mustPush(t, e.DirectRef(stackRepo+":v1"), files, testOptions(t))
	e.Configure(func(c *registry.EmulatorConfig) { *c = cfg })
	return e
}

// readStack resolves ref, reads the whole merged disk and compares it with
// the oracle; then pulls every blob (which checks its digest).
func readStack(t *testing.T, ref string, o Options) []*Blob {
	t.Helper()
	blobs, err := Resolve(context.Background(), ref, o)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	t.Cleanup(func() { closeBlobs(t, blobs) })
	s, err := openStack(t, blobs)
	if err != nil {
		t.Fatalf("open stack: %v", err)
	}
	if got, err := diskSum(s, s.Size()); err != nil || got != sumStack {
		t.Fatalf("merged disk %s (err %v), want %s", got, err, sumStack)
	}
	for _, b := range blobs {
		if err := b.Fetch(context.Background(), 2, nil); err != nil {
			t.Fatalf("pull %s: %v", b.Name(), err)
		}
	}
	return blobs
}

// TestEmulatedAuth: bearer tokens (anonymous, and Basic credentials from a
// docker config file), expiring every few requests, with and without
// redirects of blob GETs to an object store that must not see the
// registry's Authorization header.
func TestEmulatedAuth(t *testing.T) {
	for _, tc := range []struct {
		name     string
		user     string
		redirect bool
	}{
		{"anonymous", "", false},
		{"credentials", "obdfs", false},
		{"anonymous/redirect", "", true},
		{"credentials/redirect", "obdfs", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := emulated(t, registry.EmulatorConfig{User: tc.user, Password: "pw", TokenUses: 3, Redirect: tc.redirect})
			o := testOptions(t)
			o.RefillSize = 16 << 10 // many GETs, so tokens expire mid-read
			if tc.user != "" {
				t.Setenv("DOCKER_CONFIG", e.DockerConfig(t, tc.user, "pw"))
				o.Keychain = nil // authn.DefaultKeychain reads DOCKER_CONFIG
			}
			readStack(t, e.Ref(stackRepo+":v1"), o)
			if _, ok := e.ScopesAsked.Load("repository:" + stackRepo + ":pull"); !ok {
				t.Error("no token was asked for with the repository's pull scope")
			}
			if n := e.TokenFetches.Load(); n < 3 {
				t.Errorf("%d tokens fetched; tokens expire every 3 requests, so more were needed", n)
			}
			if n := e.StoreAuthSeen.Load(); n != 0 {
				t.Errorf("the object store got %d requests carrying Authorization", n)
			}
			if tc.redirect && (e.Redirects.Load() == 0 || e.StoreGets.Load() == 0) {
				t.Errorf("redirects %d, object-store GETs %d", e.Redirects.Load(), e.StoreGets.Load())
			}
			t.Logf("tokens %d, 401s %d, blob GETs %d, redirects %d", e.TokenFetches.Load(), e.Unauthorized.Load(), e.BlobGets.Load(), e.Redirects.Load())
		})
	}
}

// TestEmulatedAuthRefused: wrong or missing credentials fail with the
// registry's answer, never with data.
func TestEmulatedAuthRefused(t *testing.T) {
	e := emulated(t, registry.EmulatorConfig{User: "obdfs", Password: "pw"})
	for _, tc := range []struct{ name, user, pw string }{
		{"no credentials", "", ""},
		{"wrong password", "obdfs", "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DOCKER_CONFIG", e.DockerConfig(t, tc.user, tc.pw))
			o := testOptions(t)
			o.Keychain = nil
			_, err := Resolve(context.Background(), e.Ref(stackRepo+":v1"), o)
			if err == nil || !strings.Contains(strings.ToUpper(err.Error()), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
				t.Fatalf("resolve: %v, want an authorization error", err)
			}
			t.Log(err)
		})
	}
}

// TestEmulatedCredentialRotation: the password changes while blobs are open
// (ECR's 12-hour passwords, short-lived tokens from credential helpers):
// the token server refuses the old one; the client resolves the credentials
// again from the docker config and goes on.
func TestEmulatedCredentialRotation(t *testing.T) {
	e := emulated(t, registry.EmulatorConfig{User: "obdfs", Password: "old"})
	dir := e.DockerConfig(t, "obdfs", "old")
	t.Setenv("DOCKER_CONFIG", dir)
	o := testOptions(t)
	o.Keychain = nil
	blobs, err := Resolve(context.Background(), e.Ref(stackRepo+":v1"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeBlobs(t, blobs)
	p := make([]byte, 4096)
	if _, err := blobs[0].ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	e.Configure(func(c *registry.EmulatorConfig) { c.Password = "new" })
	e.ExpireTokens()
	e.WriteDockerConfig(t, dir, "obdfs", "new")
	s, err := openStack(t, blobs)
	if err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
	if got, err := diskSum(s, s.Size()); err != nil || got != sumStack {
		t.Fatalf("merged disk %s (err %v), want %s", got, err, sumStack)
	}
}

// TestEmulatedExpiredRedirect: the object store answers 403 for a
// pre-signed URL that has expired; the client goes back to the registry
// for a fresh one, and nothing of the 403 answers is cached.
func TestEmulatedExpiredRedirect(t *testing.T) {
	e := emulated(t, registry.EmulatorConfig{Redirect: true, TokenUses: 5})
	o := testOptions(t)
	o.RefillSize = 16 << 10
	e.ExpireURLs(3)
	blobs := readStack(t, e.Ref(stackRepo+":v1"), o)
	if n := e.StoreExpired.Load(); n != 3 {
		t.Errorf("%d expired-URL answers, want 3", n)
	}
	for _, b := range blobs {
		if got := blobSum(t, b); got != b.Digest() {
			t.Errorf("%s: cached content %s", b.Name(), got)
		}
	}
	// Every URL expired: a clear error, not data.
	e.ExpireURLs(1 << 30)
	o2 := testOptions(t)
	bs, err := Resolve(context.Background(), e.Ref(stackRepo+":v1"), o2)
	if err != nil {
		t.Fatal(err)
	}
	defer closeBlobs(t, bs)
	_, err = bs[0].ReadAt(make([]byte, 10), 0)
	var fe *FetchError
	if !errors.As(err, &fe) || fe.Status != http.StatusForbidden {
		t.Fatalf("read with every URL expired: %v, want a FetchError with 403", err)
	}
	t.Log(err)
}

// TestEmulatedRateLimit: 429 with Retry-After (seconds, or an HTTP date) is
// waited out; the registry keeps answering 429 to requests that come
// earlier, so a client that ignores Retry-After fails here. A Retry-After
// longer than the per-request timeout fails at once with a clear error.
func TestEmulatedRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func() string
		ok    bool
	}{
		{"seconds", func() string { return "1" }, true},
		{"date", func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, true},
		{"hours", func() string { return "21600" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := emulated(t, registry.EmulatorConfig{})
			o := testOptions(t)
			blobs, err := Resolve(context.Background(), e.Ref(stackRepo+":v1"), o)
			if err != nil {
				t.Fatal(err)
			}
			defer closeBlobs(t, blobs)
			e.RateLimit(1, tc.after())
			_, err = blobs[0].ReadAt(make([]byte, 4096), 0)
			if !tc.ok {
				var fe *FetchError
				if !errors.As(err, &fe) || fe.Status != http.StatusTooManyRequests || !strings.Contains(err.Error(), "wait") {
					t.Fatalf("read: %v, want a FetchError with 429 naming the wait", err)
				}
				t.Log(err)
				if c := blobs[0].CachedBytes(); c != 0 {
					t.Errorf("%d bytes cached from 429 answers", c)
				}
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if n := e.TooEarly.Load(); n != 0 {
				t.Errorf("%d requests came before Retry-After had passed", n)
			}
			s, err := openStack(t, blobs)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := diskSum(s, s.Size()); err != nil || got != sumStack {
				t.Fatalf("merged disk %s (err %v), want %s", got, err, sumStack)
			}
		})
	}
}

// TestEmulatedIgnoredRange: ranged GETs answered 200 with the whole blob and
// no Content-Length, HEADs without Content-Length. Reads stay right; the
// bytes before the asked range are cached rather than downloaded again for
// every read; a blob of unknown size is sized (and checked) from the body.
func TestEmulatedIgnoredRange(t *testing.T) {
	e := emulated(t, registry.EmulatorConfig{IgnoreRange: true, TokenUses: 4})
	o := testOptions(t)
	o.RefillSize = 16 << 10
	blobs := readStack(t, e.Ref(stackRepo+":v1"), o)
	if n := e.WholeBodies.Load(); n == 0 || n > int64(4*len(blobs)) {
		t.Errorf("%d whole-blob answers for %d blobs: want some, and few (the passed-over bytes are cached)", n, len(blobs))
	}
	// Size unknown (a config.v1.json without sizes): probed.
	for _, b := range blobs {
		ob, err := OpenBlob(context.Background(), "http://"+e.Host+"/v2/"+stackRepo+"/blobs", b.Digest(), 0, testOptions(t))
		if err != nil {
			t.Fatalf("OpenBlob without a size: %v", err)
		}
		if ob.Size() != b.Size() {
			t.Errorf("probed size %d, want %d", ob.Size(), b.Size())
		}
		if got := blobSum(t, ob); got != b.Digest() {
			t.Errorf("%s: content %s", ob.Name(), got)
		}
		ob.Close()
	}
}

// attestation builds a BuildKit-style attestation manifest for img.
func attestation(t *testing.T, img v1.Image) mutate.IndexAddendum {
	t.Helper()
	a, err := random.Image(100, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return mutate.IndexAddendum{Add: a, Descriptor: v1.Descriptor{
		Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
		Annotations: map[string]string{
			"vnd.docker.reference.type":   "attestation-manifest",
			"vnd.docker.reference.digest": d.String(),
		},
	}}
}

// TestEmulatedIndexes: OCI indexes and Docker manifest lists holding Docker
// schema2 and OCI images with BuildKit attestation manifests (before and
// after the images), resolved by platform through the authenticated front.
func TestEmulatedIndexes(t *testing.T) {
	zf := fixture(t, "b/base.lz4.zfile")
	files := fixtures(t, stackFiles...)
	e := emulated(t, registry.EmulatorConfig{})
	o := testOptions(t)
	mustPush(t, e.DirectRef("multi/img:amd64"), files, o) // OCI
	oArm := o
	oArm.Platform = "linux/arm64/v8"
	if _, err := Push(context.Background(), e.DirectRef("multi/img:arm64"), []string{zf}, PushOptions{Options: oArm, DockerMediaTypes: true}); err != nil {
		t.Fatal(err)
	}
	get := func(tag string) v1.Image {
		ref, _ := name.ParseReference(e.Direct + "/multi/img:" + tag)
		img, err := ggcrremote.Image(ref)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	amd, arm := get("amd64"), get("arm64")
	e.Configure(func(c *registry.EmulatorConfig) { c.TokenUses = 2; c.Redirect = true })
	for _, mt := range []types.MediaType{types.OCIImageIndex, types.DockerManifestList} {
		idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
			attestation(t, arm),
			mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
			mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
			attestation(t, amd),
		), mt)
		tag := strings.NewReplacer(".", "-", "/", "-", "+", "-").Replace(string(mt))
		ref, _ := name.ParseReference(e.Direct + "/multi/img:" + tag)
		if err := ggcrremote.WriteIndex(ref, idx); err != nil {
			t.Fatal(err)
		}
		for plat, want := range map[string]int{"linux/amd64": 3, "linux/arm64": 1, "linux/arm64/v8": 1} {
			o := testOptions(t)
			o.Platform = plat
			blobs, err := Resolve(context.Background(), e.Ref("multi/img:"+tag), o)
			if err != nil {
				t.Fatalf("%s %s: %v", mt, plat, err)
			}
			if len(blobs) != want {
				t.Errorf("%s %s: %d layers, want %d", mt, plat, len(blobs), want)
			}
			if got := blobSum(t, blobs[0]); got != wrappedSum(t, zf) {
				t.Errorf("%s %s: layer 0 content %s", mt, plat, got)
			}
			closeBlobs(t, blobs)
		}
		o := testOptions(t)
		o.Platform = "linux/s390x"
		_, err := Resolve(context.Background(), e.Ref("multi/img:"+tag), o)
		if err == nil || !strings.Contains(err.Error(), "s390x") {
			t.Errorf("%s: no s390x image: %v, want an error naming the platform", mt, err)
		}
	}
}

// aciImage builds an image the way ACI's convertor does: ggcr static
// layers of the tar-wrapped files (so diff_id = digest), the uncompressed
// tar media type, the three annotations and blob-fs-type.
func aciImage(t *testing.T, files []string, docker bool) v1.Image {
	t.Helper()
	layerMT, manifestMT, configMT := types.OCIUncompressedLayer, types.OCIManifestSchema1, types.OCIConfigJSON
	if docker {
		layerMT, manifestMT, configMT = types.DockerUncompressedLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, manifestMT), configMT)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		blob := testlayer.TarWrap(raw, 0o444)
		l := static.NewLayer(blob, layerMT)
		d, _ := l.Digest()
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: layerMT, Annotations: map[string]string{
			AnnotationBlobDigest: d.String(),
			AnnotationBlobSize:   strconv.Itoa(len(blob)),
			AnnotationVersion:    "0.1.0",
			AnnotationFsType:     "ext4",
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// TestEmulatedACIForm: images built like ACI's convertor (Docker and OCI
// media types; config diff_ids = blob digests) read right.
func TestEmulatedACIForm(t *testing.T) {
	files := fixtures(t, stackFiles...)
	e := emulated(t, registry.EmulatorConfig{})
	for _, docker := range []bool{true, false} {
		img := aciImage(t, files, docker)
		cf, _ := img.ConfigFile()
		m, _ := img.Manifest()
		for i, l := range m.Layers {
			if cf.RootFS.DiffIDs[i] != l.Digest {
				t.Fatalf("test image: diff_id %d %s is not the blob digest %s", i, cf.RootFS.DiffIDs[i], l.Digest)
			}
		}
		tag := map[bool]string{true: "docker", false: "oci"}[docker]
		ref, _ := name.ParseReference(e.Direct + "/aci/img:" + tag)
		if err := ggcrremote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		e.Configure(func(c *registry.EmulatorConfig) { c.TokenUses = 4; c.Redirect = docker })
		readStack(t, e.Ref("aci/img:"+tag), testOptions(t))
		e.Configure(func(c *registry.EmulatorConfig) { *c = registry.EmulatorConfig{} })
	}
}

// TestEmulatedTurboOCI: TurboOCI images (current and legacy annotation
// keys, with the raw base layer first) fail with a clear "not supported".
func TestEmulatedTurboOCI(t *testing.T) {
	e := emulated(t, registry.EmulatorConfig{})
	base := static.NewLayer(bytes.Repeat([]byte{0}, 4096), types.DockerUncompressedLayer)
	bd, _ := base.Digest()
	meta := static.NewLayer([]byte("not really a turboOCIv1.tar.gz"), types.DockerLayer)
	md, _ := meta.Digest()
	target := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name string
		ann  map[string]string
	}{
		{"current", map[string]string{
			AnnotationVersion: "0.1.0-turbo.ociv1",
			"containerd.io/snapshot/overlaybd/turbo-oci/target-digest":     target,
			"containerd.io/snapshot/overlaybd/turbo-oci/target-media-type": string(types.DockerLayer),
		}},
		{"legacy", map[string]string{
			AnnotationVersion: "0.1.0-fastoci",
			"containerd.io/snapshot/overlaybd/fastoci/target-digest":     target,
			"containerd.io/snapshot/overlaybd/fastoci/target-media-type": string(types.DockerLayer),
		}},
		{"no version", map[string]string{
			"containerd.io/snapshot/overlaybd/turbo-oci/target-digest": target,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{AnnotationBlobDigest: md.String(), AnnotationBlobSize: "30"}
			for k, v := range tc.ann {
				ann[k] = v
			}
			img, err := mutate.Append(mutate.MediaType(empty.Image, types.DockerManifestSchema2),
				mutate.Addendum{Layer: base, MediaType: types.DockerUncompressedLayer, Annotations: map[string]string{
					AnnotationBlobDigest: bd.String(), AnnotationBlobSize: "4096", AnnotationVersion: "0.1.0"}},
				mutate.Addendum{Layer: meta, MediaType: types.DockerLayer, Annotations: ann})
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := name.ParseReference(e.Direct + "/turbo/img:" + strings.ReplaceAll(tc.name, " ", "-"))
			if err := ggcrremote.Write(ref, img); err != nil {
				t.Fatal(err)
			}
			_, err = Resolve(context.Background(), e.Ref("turbo/img:"+strings.ReplaceAll(tc.name, " ", "-")), testOptions(t))
			if !errors.Is(err, ErrNotOverlaybd) || !strings.Contains(err.Error(), "TurboOCI") {
				t.Fatalf("resolve: %v, want ErrNotOverlaybd naming TurboOCI", err)
			}
			t.Log(err)
		})
	}
}

// TestDockerHubBlobURL: ACI writes repoBlobUrl with registry-1.docker.io;
// credentials from docker login are stored for docker.io.
func TestDockerHubBlobURL(t *testing.T) {
	repo, insecure, err := parseRepoBlobURL("https://registry-1.docker.io/v2/library/redis/blobs")
	if err != nil || insecure {
		t.Fatal(err, insecure)
	}
	if repo.RegistryStr() != name.DefaultRegistry || repo.RepositoryStr() != "library/redis" {
		t.Fatalf("repository %s (registry %s)", repo, repo.RegistryStr())
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/config.json", []byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}`), 0o600)
	t.Setenv("DOCKER_CONFIG", dir)
	a, err := authn.DefaultKeychain.Resolve(repo)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := a.Authorization(); err != nil || c.Username != "u" || c.Password != "p" {
		t.Fatalf("docker login credentials not found for %s: %+v %v", repo, c, err)
	}
}
