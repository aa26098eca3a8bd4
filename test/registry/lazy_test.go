package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/remote"
	"github.com/obdfs/obdfs/test/netshape"
)

// pushRandomBlob writes size random bytes as a blob of repo to the registry
// and returns its digest.
func pushRandomBlob(t *testing.T, srv *Server, repo string, size int) string {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	l := static.NewLayer(data, types.OCIUncompressedLayer)
	r, err := name.NewRepository(srv.Host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcrremote.WriteLayer(r, l, ggcrremote.WithAuthFromKeychain(srv.Keychain())); err != nil {
		t.Fatal(err)
	}
	d, _ := l.Digest()
	return d.String()
}

// shaped puts docker-registry behind the shaping proxy.
func shaped(t *testing.T, srv *Server, cfg netshape.Config) *netshape.Proxy {
	t.Helper()
	cfg.Target = srv.Host
	cfg.Lifetime = 10 * time.Minute
	p, err := netshape.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestReadaheadThroughProxy: a lone sequential reader of a blob in
// docker-registry behind a 40 ms RTT, 50 MB/s link. With readahead the blob
// arrives in a few large GETs; without, one GET per chunk. Both read the
// right bytes (the whole blob hashes to its digest).
func TestReadaheadThroughProxy(t *testing.T) {
	srv := Start(t, false)
	const size = 16 << 20
	dig := pushRandomBlob(t, srv, "lazy/blob", size)
	p := shaped(t, srv, netshape.Config{Rate: 50e6, Shared: true}.WithRTT(40*time.Millisecond))
	url := "http://" + p.Addr() + "/v2/lazy/blob/blobs"
	for _, tc := range []struct {
		name      string
		readahead int64
		maxGets   int64
	}{
		{"readahead", 0, 24},
		{"no readahead", -1, size / remote.DefaultRefillSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := remote.Options{CacheDir: t.TempDir(), Keychain: authn.NewMultiKeychain(), Readahead: tc.readahead}
			b, err := remote.OpenBlob(context.Background(), url, dig, size, o)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			start := time.Now()
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(b, 0, size)); err != nil {
				t.Fatal(err)
			}
			el := time.Since(start)
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dig {
				t.Fatalf("read %s, want %s", got, dig)
			}
			st := b.Stats()
			t.Logf("%s: %v (%.1f MB/s), %d GETs, %d ahead, %d chunks hit ahead", tc.name, el.Round(time.Millisecond),
				size/el.Seconds()/1e6, st.Fetches, st.AheadFetches, st.AheadHits)
			if st.Fetches > tc.maxGets {
				t.Errorf("%d GETs, want at most %d", st.Fetches, tc.maxGets)
			}
			if (st.AheadHits > 0) != (tc.readahead >= 0) {
				t.Errorf("%d readahead hits", st.AheadHits)
			}
			if st.FetchedBytes != size {
				t.Errorf("fetched %d bytes of %d", st.FetchedBytes, size)
			}
		})
	}
}
