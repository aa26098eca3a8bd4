package remote

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"testing"
)

// A cached raw blob is checked before it is served, not trusted forever:
// a byte flipped on disk is found on the first read after a reopen (the
// chunk is fetched again and the read returns the right bytes), by Fetch
// (which hashes the blob again before calling it verified), and by
// VerifyCache; a blob whose chunk sums were forged along with its bytes
// fails the whole-blob digest and is dropped.
func TestCachedBlobChecks(t *testing.T) {
	raw := fixture(t, "d/l1.lsmt") // a raw LSMT layer: no CRC of its own
	host, _ := inproc(t)
	o := testOptions(t)
	ref := "docker://" + host + "/v/raw:v1"
	mustPush(t, ref, []string{raw}, o)
	open := func() *Blob { return resolveFirst(t, ref, o) }
	b := open()
	want, err := readAll(b)
	if err != nil {
		t.Fatal(err)
	}
	path, chunk := b.cf.path, b.chunk
	if err := b.Fetch(context.Background(), 2, nil); err != nil || !b.Stats().Verified {
		t.Fatalf("fetch: %v, verified %v", err, b.Stats().Verified)
	}
	b.Close()
	flip := func(off int64) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var c [1]byte
		f.ReadAt(c[:], off)
		c[0] ^= 0x40
		f.WriteAt(c[:], off)
		f.Close()
	}
	off := int64(len(want)) / 2

	// A read after a reopen.
	flip(off)
	b = open()
	p := make([]byte, 4096)
	if _, err := b.ReadAt(p, off); err != nil || !bytes.Equal(p, want[off:off+4096]) {
		t.Fatalf("read of a damaged cached chunk: %v, right bytes %v", err, bytes.Equal(p, want[off:off+4096]))
	}
	if st := b.Stats(); st.Damaged != 1 || st.FetchedBytes != min(chunk, int64(len(want))-off/chunk*chunk) {
		t.Fatalf("damaged %d, fetched %d bytes, want 1 chunk", st.Damaged, st.FetchedBytes)
	}
	b.Close()

	// Fetch (obdfs pull) of a complete cached blob.
	flip(off)
	b = open()
	if err := b.Fetch(context.Background(), 2, nil); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); !st.Verified || st.Damaged != 1 {
		t.Fatalf("fetch over a damaged chunk: verified %v damaged %d", st.Verified, st.Damaged)
	}
	if got, _ := readAll(b); !bytes.Equal(got, want) {
		t.Fatal("wrong bytes after fetch")
	}
	b.Close()

	// The scrub.
	flip(off)
	var checks []CacheCheck
	if err := VerifyCache(o.CacheDir, func(c CacheCheck) { checks = append(checks, c) }); err != nil {
		t.Fatal(err)
	}
	if len(checks) != 1 || checks[0].Damaged != 1 || checks[0].Verified || checks[0].Present != int64(len(want))-min(chunk, int64(len(want))-off/chunk*chunk) {
		t.Fatalf("cache verify: %+v", checks)
	}
	b = open()
	if got, _ := readAll(b); !bytes.Equal(got, want) || b.Stats().FetchedBytes == 0 {
		t.Fatal("the dropped chunk was not fetched again")
	}
	b.Close()

	// Bytes and their sum both changed: only the digest can tell.
	flip(off)
	m, err := os.ReadFile(path + ".map")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	n := (int64(len(data)) + chunk - 1) / chunk
	i := off / chunk
	sums := m[mapHeaderSize+(n+7)/8:]
	binary.LittleEndian.PutUint32(sums[4*i:], crc32.Checksum(data[i*chunk:min((i+1)*chunk, int64(len(data)))], crcTable))
	binary.LittleEndian.PutUint32(m[len(m)-4:], crc32.Checksum(m[:len(m)-4], crcTable))
	os.WriteFile(path+".map", m, 0o600)
	checks = nil
	VerifyCache(o.CacheDir, func(c CacheCheck) { checks = append(checks, c) })
	if len(checks) != 1 || !errors.Is(checks[0].Err, ErrDigest) || checks[0].Present != 0 {
		t.Fatalf("cache verify of a forged chunk: %+v", checks)
	}
}
