package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/internal/fixture"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/testlayer"
	"github.com/obdfs/obdfs/remote"
	"github.com/obdfs/obdfs/server"
	"github.com/obdfs/obdfs/test/netshape"
)

// pushRandomBlob writes size random bytes as a blob of repo to the registry
// and returns its digest.
func pushRandomBlob(t *testing.T, srv *Server, repo string, size int) string {
	t.Helper()
	data := testlayer.Random(uint64(size), size)
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
		{"readahead", 0, 40},
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

// TestMountBackgroundCLI: obdfs mount of a docker:// image through the
// shaping proxy with --background: the served disk equals the local stack,
// and `obdfs stats --json` shows every layer downloaded, verified and
// counted (GETs, bytes).
func TestMountBackgroundCLI(t *testing.T) {
	needs.FUSE(t)
	fixture.Oracle(t, "d/l1.lsmt")
	srv := Start(t, false)
	p := shaped(t, srv, netshape.Config{Rate: 100e6, Shared: true}.WithRTT(20*time.Millisecond))
	layers := []string{oracle + "/d/l1.lsmt", oracle + "/d/l2.lsmt", oracle + "/d/l3.lsmt"}
	mustObdfs(t, nil, "push", "-z", "--insecure", "--layer", layers[0], "--layer", layers[1], "--layer", layers[2], srv.Ref("lazy/stack:v1"))
	want := sha256.New()
	cat := exec.Command(obdfsBin, "cat", strings.Join(layers, ","))
	cat.Stdout = want
	if err := cat.Run(); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	ref := "docker://" + p.Addr() + "/lazy/stack:v1"
	mustObdfs(t, nil, "mount", "--insecure", "--cache-dir", t.TempDir(), "--background", "--background-rate", "64MiB", mnt, "img="+ref)
	defer obdfs(t, nil, "umount", mnt)
	got := sha256.New()
	f, err := os.Open(filepath.Join(mnt, "img"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(got, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("the lazily served disk differs from the local stack")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Stacks []server.StackInfo `json:"stacks"`
		}
		out := mustObdfs(t, nil, "stats", "--json", mnt)
		if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Stacks) != 1 || len(st.Stacks[0].Layers) != 3 {
			t.Fatalf("stats: %v\n%s", err, out)
		}
		done := 0
		for _, l := range st.Stacks[0].Layers {
			fi := l.Fetch
			if fi == nil {
				t.Fatalf("layer %s has no registry counters", l.Name)
			}
			if fi.Background == "done" {
				if !fi.Verified || fi.Cached != fi.Size || fi.Fetches == 0 || fi.FetchedBytes != fi.Size {
					t.Errorf("layer %s: %+v", l.Name, *fi)
				}
				done++
			}
		}
		if done == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background download not done after 60 s:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := mustObdfs(t, nil, "stats", mnt); !strings.Contains(out, "REGISTRY LAYER") || !strings.Contains(out, "done") {
		t.Errorf("stats table:\n%s", out)
	}
}

// TestTraceSharedLayers: a trace recorded by `obdfs cat --record-trace` of
// image A (3 layers) is replayed on a cold open of image B, which shares A's
// two lower layers: the traced ranges of the shared layers are fetched ahead,
// so reading them afterwards makes no GET.
func TestTraceSharedLayers(t *testing.T) {
	fixture.Oracle(t, "d/l1.lsmt")
	srv := Start(t, false)
	p := shaped(t, srv, netshape.Config{}.WithRTT(10*time.Millisecond))
	l := []string{oracle + "/d/l1.lsmt", oracle + "/d/l2.lsmt", oracle + "/d/l3.lsmt"}
	mustObdfs(t, nil, "push", "-z", "--insecure", "--layer", l[0], "--layer", l[1], "--layer", l[2], srv.Ref("lazy/a:v1"))
	mustObdfs(t, nil, "push", "-z", "--insecure", "--layer", l[0], "--layer", l[1], srv.Ref("lazy/b:v1"))
	trace := filepath.Join(t.TempDir(), "start.trace")
	refA := "docker://" + p.Addr() + "/lazy/a:v1"
	mustObdfs(t, nil, "cat", "--insecure", "--cache-dir", t.TempDir(), "--readahead", "0", "--record-trace", trace,
		"--offset", "1048576", "--length", "8388608", "-o", filepath.Join(t.TempDir(), "out"), refA)
	tr, err := remote.LoadTrace(trace)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Layers) != 3 {
		t.Fatalf("trace of a 3-layer image names %d layers", len(tr.Layers))
	}

	o := remote.Options{CacheDir: t.TempDir(), Keychain: authn.NewMultiKeychain(), Insecure: true, Readahead: -1, Trace: tr}
	blobs, err := remote.Resolve(context.Background(), "docker://"+p.Addr()+"/lazy/b:v1", o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, b := range blobs {
			b.Close()
		}
	}()
	if len(blobs) != 2 {
		t.Fatalf("image B has %d layers", len(blobs))
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, b := range blobs {
		ranges := tr.Layers[b.Digest()]
		if len(ranges) == 0 {
			t.Fatalf("layer %s of B is not in the trace of A (pushes not reproducible?)", b.Digest())
		}
		for b.Stats().Replay != "done" {
			if time.Now().After(deadline) {
				t.Fatalf("replay of %s not done", b.Digest())
			}
			time.Sleep(5 * time.Millisecond)
		}
		st := b.Stats()
		for _, r := range ranges {
			if _, err := b.ReadAt(make([]byte, r[1]), r[0]); err != nil {
				t.Fatal(err)
			}
		}
		if after := b.Stats(); after.Fetches != st.Fetches || st.AheadBytes == 0 {
			t.Errorf("layer %s: %d GETs reading the traced ranges after the replay (replay fetched %d bytes)",
				b.Digest(), after.Fetches-st.Fetches, st.AheadBytes)
		}
	}
}

// TestColdOpenWarmConnections: resolving an image warms the blob client
// (handshake, idle connections) while the manifest is fetched, so the
// layers' first GETs, sent at once, open no new connection.
func TestColdOpenWarmConnections(t *testing.T) {
	fixture.Oracle(t, "d/l1.lsmt")
	srv := Start(t, false)
	l := []string{oracle + "/d/l1.lsmt", oracle + "/d/l2.lsmt", oracle + "/d/l3.lsmt"}
	mustObdfs(t, nil, "push", "-z", "--insecure", "--layer", l[0], "--layer", l[1], "--layer", l[2], srv.Ref("lazy/warm:v1"))
	p := shaped(t, srv, netshape.Config{}.WithRTT(20*time.Millisecond))
	o := remote.Options{CacheDir: t.TempDir(), Keychain: authn.NewMultiKeychain(), Insecure: true}
	blobs, err := remote.Resolve(context.Background(), "docker://"+p.Addr()+"/lazy/warm:v1", o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, b := range blobs {
			b.Close()
		}
	}()
	conns := p.Stats().Conns
	done := make(chan struct{})
	for _, b := range blobs {
		go func() { b.FetchEnds(); done <- struct{}{} }()
	}
	for range blobs {
		<-done
	}
	for _, b := range blobs {
		if b.CachedBytes() == 0 {
			t.Errorf("%s: nothing fetched", b.Digest())
		}
	}
	if n := p.Stats().Conns - conns; n != 0 {
		t.Errorf("the first GETs of %d layers opened %d new connections", len(blobs), n)
	}
}

// TestStackAddLazyFlags: the lazy-read flags of `obdfs stack add` apply to
// that stack only. The daemon is mounted without background download or a
// trace; stack b is added with --background and --record-trace. `obdfs
// stats --json` shows b's background download done (its layer complete and
// verified) and a's off, and the trace, written when b is removed, names
// b's layer and not a's.
func TestStackAddLazyFlags(t *testing.T) {
	needs.FUSE(t)
	fixture.Oracle(t, "d/l1.lsmt")
	srv := Start(t, false)
	refA, refB := srv.Ref("lazy/raw:v1"), srv.Ref("lazy/z:v1")
	mustObdfs(t, nil, "push", "--insecure", "--layer", oracle+"/d/l1.lsmt", refA)
	mustObdfs(t, nil, "push", "-z", "--insecure", "--layer", oracle+"/d/l1.lsmt", refB)
	mnt, trace := t.TempDir(), filepath.Join(t.TempDir(), "b.trace")
	mustObdfs(t, nil, "mount", "--insecure", "--cache-dir", t.TempDir(), "--readahead", "0", mnt, "a="+refA)
	defer obdfs(t, nil, "umount", mnt)
	mustObdfs(t, nil, "stack", "add", "--background", "--record-trace", trace, mnt, "b="+refB)
	for _, name := range []string{"a", "b"} {
		f, err := os.Open(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.ReadAt(make([]byte, 4096), 0)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	layer := func(st []server.StackInfo, name string) disk.LayerInfo {
		for _, s := range st {
			if s.Name == name && len(s.Layers) == 1 && s.Layers[0].Fetch != nil {
				return s.Layers[0]
			}
		}
		t.Fatalf("no registry layer of stack %s in %+v", name, st)
		return disk.LayerInfo{}
	}
	var a, b disk.LayerInfo
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var st struct {
			Stacks []server.StackInfo `json:"stacks"`
		}
		out := mustObdfs(t, nil, "stats", "--json", mnt)
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("stats: %v\n%s", err, out)
		}
		a, b = layer(st.Stacks, "a"), layer(st.Stacks, "b")
		if b.Fetch.Background == "done" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background download of stack b not done after 60 s:\n%s", out)
		}
	}
	if !b.Fetch.Verified || b.Fetch.Cached != b.Fetch.Size {
		t.Errorf("stack b, added with --background: %+v", *b.Fetch)
	}
	if a.Fetch.Background != "" || a.Fetch.BackgroundBytes != 0 {
		t.Errorf("stack a, mounted without --background: %+v", *a.Fetch)
	}
	if _, err := os.Stat(trace); err == nil {
		t.Fatal("trace written while stack b is open")
	}
	mustObdfs(t, nil, "stack", "rm", mnt, "a")
	mustObdfs(t, nil, "stack", "rm", mnt, "b")
	tr, err := remote.LoadTrace(trace)
	if err != nil {
		t.Fatalf("trace of stack b: %v", err)
	}
	if len(tr.Layers) != 1 || len(tr.Layers[b.Identity]) == 0 {
		t.Errorf("trace of stack b names %d layers, want only b's %s: %v", len(tr.Layers), b.Identity, tr.Layers)
	}
	if _, ok := tr.Layers[a.Identity]; ok || a.Identity == b.Identity {
		t.Errorf("stack a's layer %s is in stack b's trace", a.Identity)
	}
}
