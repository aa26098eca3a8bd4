package remote

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// TestFaults reads a ZFile layer through a registry that misbehaves on range
// GETs. Every read returns the right data or an error — never wrong data —
// and afterwards, with the registry healthy, the cache yields the right data.
func TestFaults(t *testing.T) {
	zf := fixtures(t, "b/base.lz4.zfile")
	tests := []struct {
		mode   string
		times  int // -1: every request
		wantOK bool
	}{
		{"cut", 2, true},
		{"500", 2, true},
		{"500", -1, false},
		{"stall", 1, true},
		{"stall", -1, false},
		{"norange", 1, true},
		{"wrong", 1, true},   // CRC catches it, Invalidate, one refetch
		{"wrong", -1, false}, // refetch is wrong too: EIO, never garbage
	}
	for _, tc := range tests {
		name := tc.mode
		if tc.times < 0 {
			name += "/always"
		}
		t.Run(name, func(t *testing.T) {
			host, f := inproc(t)
			f.stall = 2 * time.Second
			o := testOptions(t)
			o.Timeout = 300 * time.Millisecond
			o.RefillSize = 64 << 10
			ref := "docker://" + host + "/fault/img:v1"
			mustPush(t, ref, zf, o)
			blobs, err := Resolve(context.Background(), ref, o)
			if err != nil {
				t.Fatal(err)
			}
			f.set(tc.mode, tc.times)
			var got string
			s, err := openStack(t, blobs)
			if err == nil {
				got, err = diskSum(s, s.Size())
			}
			switch {
			case err == nil && got != sumLayer1:
				t.Fatalf("WRONG DATA: content %s, want %s", got, sumLayer1)
			case err == nil && !tc.wantOK:
				t.Fatalf("read succeeded, want an error")
			case err != nil && tc.wantOK:
				t.Fatalf("read failed: %v", err)
			case err != nil:
				t.Logf("failed as expected: %v", err)
			}
			if tc.mode == "500" && !tc.wantOK {
				var fe *FetchError
				if !errors.As(err, &fe) || fe.Status != 500 {
					t.Errorf("error %v is not a FetchError with status 500", err)
				}
				if c := blobs[0].CachedBytes(); c != 0 {
					t.Errorf("%d bytes cached from failed fetches", c)
				}
			}
			closeBlobs(t, blobs)

			// Healthy again: what the cache kept plus fresh fetches must be
			// right (nothing bad stayed in the cache).
			f.set("", 0)
			blobs, err = Resolve(context.Background(), ref, o)
			if err != nil {
				t.Fatal(err)
			}
			defer closeBlobs(t, blobs)
			s, err = openStack(t, blobs)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := diskSum(s, s.Size()); err != nil || got != sumLayer1 {
				t.Fatalf("after the faults: content %s (err %v), want %s", got, err, sumLayer1)
			}
		})
	}
}

// TestDigestCheck: a blob downloaded completely is checked against its
// digest; wrong bytes make Fetch fail with ErrDigest and leave nothing cached.
func TestDigestCheck(t *testing.T) {
	zf := fixtures(t, "b/base.lz4.zfile")
	host, f := inproc(t)
	o := testOptions(t)
	ref := "docker://" + host + "/dig/img:v1"
	mustPush(t, ref, zf, o)
	blobs, err := Resolve(context.Background(), ref, o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeBlobs(t, blobs)
	b := blobs[0]
	f.set("wrong", -1)
	err = b.Fetch(context.Background(), 2, nil)
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("Fetch with a wrong range: %v, want ErrDigest", err)
	}
	if c := b.CachedBytes(); c != 0 {
		t.Fatalf("%d bytes still cached after the digest mismatch", c)
	}
	f.set("", 0)
	var last int64
	if err := b.Fetch(context.Background(), 2, func(have, total int64) { last = have }); err != nil {
		t.Fatalf("second Fetch: %v", err)
	}
	if last != b.Size() || b.CachedBytes() != b.Size() {
		t.Fatalf("progress %d, cached %d, want %d", last, b.CachedBytes(), b.Size())
	}
	// Pull is resumable/idempotent: nothing more is fetched.
	before := b.Stats().FetchedBytes
	if err := b.Fetch(context.Background(), 2, nil); err != nil {
		t.Fatal(err)
	}
	if after := b.Stats().FetchedBytes; after != before {
		t.Errorf("a second pull fetched %d bytes", after-before)
	}
}

// TestCachePersistence: the map survives a reopen; a damaged or missing map
// makes the data untrusted (fetched again), never served.
func TestCachePersistence(t *testing.T) {
	zf := fixtures(t, "b/base.lz4.zfile")
	host, f := inproc(t)
	o := testOptions(t)
	ref := "docker://" + host + "/p/img:v1"
	mustPush(t, ref, zf, o)
	open := func() *Blob { return resolveFirst(t, ref, o) }
	b := open()
	p := make([]byte, 1000)
	if _, err := b.ReadAt(p, 300_000); err != nil {
		t.Fatal(err)
	}
	hexd, _, _ := splitDigest(b.Digest())
	path := b.cf.path
	b.Close()
	// Private: other users cannot read cached blobs.
	for p, want := range map[string]os.FileMode{o.CacheDir + "/blobs": 0o700, o.CacheDir + "/blobs/sha256": 0o700, path: 0o600, path + ".map": 0o600} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, st.Mode().Perm(), err, want)
		}
	}
	b = open()
	if c := b.CachedBytes(); c == 0 {
		t.Fatal("nothing cached after a reopen")
	}
	b.Close()

	// A flipped bit in the map: ignored.
	m, err := os.ReadFile(path + ".map")
	if err != nil {
		t.Fatal(err)
	}
	m[mapHeaderSize] ^= 1
	os.WriteFile(path+".map", m, 0o644)
	b = open()
	if c := b.CachedBytes(); c != 0 {
		t.Fatalf("damaged map trusted: %d bytes", c)
	}
	// Garbage in the data file without a map bit is never served.
	os.WriteFile(path, make([]byte, b.Size()), 0o644)
	f.gets.Store(0)
	if got := blobSum(t, b); got != b.Digest() {
		t.Fatalf("content %s, want %s", got, b.Digest())
	}
	if f.gets.Load() == 0 {
		t.Fatal("no GET: stale data was served")
	}
	b.Close()
	if st, err := os.Stat(path); err != nil || st.Name() != hexd {
		t.Fatalf("cache file: %v", err)
	}
}

// TestEviction: past CacheMax, least recently used blobs not in use go.
func TestEviction(t *testing.T) {
	files := fixtures(t, "b/base.lz4.zfile", "d/l2.lsmt", "d/l3.lsmt")
	host, _ := inproc(t)
	o := testOptions(t)
	ref := "docker://" + host + "/ev/img:v1"
	mustPush(t, ref, files, o)
	o.CacheMax = 300 << 10 // less than the first blob alone
	bs, err := Resolve(context.Background(), ref, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if err := b.Fetch(context.Background(), 2, nil); err != nil {
			t.Fatal(err)
		}
	}
	paths := []string{bs[0].cf.path, bs[1].cf.path, bs[2].cf.path}
	bs[0].Close()
	time.Sleep(10 * time.Millisecond) // distinct mtimes
	bs[1].Close()
	// Force a scan now (they are rate-limited).
	bs[2].cf.c.evict()
	if _, err := os.Stat(paths[0]); !os.IsNotExist(err) {
		t.Errorf("oldest unused blob not evicted: %v", err)
	}
	if _, err := os.Stat(paths[2]); err != nil {
		t.Errorf("blob in use was evicted: %v", err)
	}
	if got := blobSum(t, bs[2]); got != bs[2].Digest() {
		t.Errorf("in-use blob content %s", got)
	}
	bs[2].Close()
}
