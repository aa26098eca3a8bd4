package lsmt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/obdfs/obdfs/internal/testlayer"
)

func newRW(t testing.TB, vsize int64) (*RWFile, string, string) {
	t.Helper()
	dir := t.TempDir()
	d, x := filepath.Join(dir, "data"), filepath.Join(dir, "index")
	f, err := Create(d, x, CreateOptions{VirtualSize: vsize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, d, x
}

func TestRWCreateHeaders(t *testing.T) {
	f, d, x := newRW(t, 1<<20)
	if _, err := Create(d, x, CreateOptions{}); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second Create: %v", err)
	}
	if !validUUID(f.UUID()) || f.ParentUUID() != nullUUID {
		t.Fatalf("uuids %q %q", f.UUID(), f.ParentUUID())
	}
	db, _ := os.ReadFile(d)
	xb, _ := os.ReadFile(x)
	if len(db) != HeaderSize || len(xb) != HeaderSize {
		t.Fatalf("sizes %d %d", len(db), len(xb))
	}
	if binary.LittleEndian.Uint32(db[28:]) != 3 || binary.LittleEndian.Uint32(xb[28:]) != 1 || binary.LittleEndian.Uint64(xb[32:]) != 4096 {
		t.Fatal("flags / index_offset wrong")
	}
	st, _ := os.Stat(d)
	if st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode())
	}
	// The fixture RW pair's headers are what Create writes for its options.
	ed, _ := os.ReadFile(fixture(t, "e/l3.data"))
	ex, _ := os.ReadFile(fixture(t, "e/l3.index"))
	dir := t.TempDir()
	g, err := Create(filepath.Join(dir, "d"), filepath.Join(dir, "x"), CreateOptions{VirtualSize: 64 << 20, UUID: "0bd00003-0000-4000-8000-000000000003", ParentUUID: "0bd00002-0000-4000-8000-000000000002"})
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	gd, _ := os.ReadFile(filepath.Join(dir, "d"))
	gx, _ := os.ReadFile(filepath.Join(dir, "x"))
	if !bytes.Equal(gd, ed[:HeaderSize]) || !bytes.Equal(gx, ex[:HeaderSize]) {
		t.Fatal("headers differ from overlaybd's")
	}
}

func TestRWWriteDiscardReopen(t *testing.T) {
	f, d, x := newRW(t, 64<<20)
	big := testlayer.Random(1, 9<<20) // split into 3 records at 4 MiB
	if _, err := f.WriteAt(big, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(testlayer.Random(2, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Discard(2<<20, 9<<20); err != nil { // split at 16383 sectors
		t.Fatal(err)
	}
	for _, bad := range []struct{ off, n int64 }{{1, 512}, {512, 100}} {
		if _, err := f.WriteAt(make([]byte, bad.n), bad.off); !errors.Is(err, ErrAlignment) {
			t.Fatalf("unaligned write: %v", err)
		}
	}
	want := make([]byte, 64<<20)
	copy(want[1<<20:], big)
	copy(want, testlayer.Random(2, 4096))
	clear(want[2<<20 : 11<<20])
	check := func(r io.ReaderAt) {
		t.Helper()
		got := testlayer.ReadAll(t, r, 64<<20)
		if i := testlayer.FirstDiff(got, want); i != len(want) {
			t.Fatalf("first difference at %d", i)
		}
	}
	check(f)
	recs := f.Index()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	xb, _ := os.ReadFile(x)
	if n := (len(xb) - HeaderSize) / RecordSize; n != 3+1+2 {
		t.Fatalf("%d log records, want 6", n)
	}
	if r := DecodeRecord(xb[HeaderSize+4*RecordSize:]); !r.Zeroed || r.Length != MaxLength || r.MOffset != (HeaderSize+9<<20+4096)/512 {
		t.Fatalf("discard record %v", r)
	}
	g, err := OpenRW(d, x)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if !reflect.DeepEqual(g.Index(), recs) {
		t.Fatalf("replayed index %v\nwant %v", g.Index(), recs)
	}
	check(g)
	// appends after reopen go after the old data
	if _, err := g.WriteAt(testlayer.Random(3, 512), 512); err != nil {
		t.Fatal(err)
	}
	copy(want[512:], testlayer.Random(3, 512))
	check(g)
}

func TestRWTornTail(t *testing.T) {
	f, d, x := newRW(t, 1<<20)
	f.WriteAt(testlayer.Random(1, 8192), 0)
	f.WriteAt(testlayer.Random(2, 4096), 8192)
	f.Sync()
	good := f.Index()
	f.WriteAt(testlayer.Random(3, 4096), 65536) // its data will be "lost"
	f.Discard(0, 512)                           // logged after it
	f.Close()
	// Crash: the last write's data never reached the disk, and half a record.
	os.Truncate(d, HeaderSize+8192+4096)
	fx, _ := os.OpenFile(x, os.O_WRONLY|os.O_APPEND, 0)
	fx.Write([]byte{1, 2, 3, 4, 5})
	fx.Close()
	g, err := OpenRW(d, x)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.Index(), good) {
		t.Fatalf("index %v want %v", g.Index(), good)
	}
	if st, _ := os.Stat(x); st.Size() != HeaderSize+2*RecordSize {
		t.Fatalf("index not cut: %d", st.Size())
	}
	g.WriteAt(testlayer.Random(4, 512), 65536)
	g.Close()
	h, err := OpenRW(d, x)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p := make([]byte, 1024)
	h.ReadAt(p, 65536)
	if !bytes.Equal(p[:512], testlayer.Random(4, 512)) || !bytes.Equal(p[512:], make([]byte, 512)) {
		t.Fatal("stale records revived")
	}

	// A bad record followed by good ones is corruption.
	f2, d2, x2 := newRW(t, 1<<20)
	f2.Close()
	xb := make([]byte, 3*RecordSize)
	Record{Offset: 0, Length: 1, MOffset: 8}.Encode(xb)
	Record{Offset: 1, Length: 1, MOffset: 100}.Encode(xb[16:])
	Record{Offset: 2, Length: 1, MOffset: 8, Zeroed: true}.Encode(xb[32:])
	fx, _ = os.OpenFile(x2, os.O_WRONLY|os.O_APPEND, 0)
	fx.Write(xb)
	fx.Close()
	os.Truncate(d2, HeaderSize+512)
	if _, err := OpenRW(d2, x2); !errors.Is(err, ErrFormat) {
		t.Fatalf("middle bad record: %v", err)
	} else {
		t.Log(err)
	}
}

func TestRWReplayVector(t *testing.T) {
	// The log replay vector of docs/format-lsmt.md §10, through the on-disk log.
	f, d, x := newRW(t, 1<<20)
	f.Close()
	os.Truncate(d, HeaderSize+3000*512)
	var log []byte
	for _, r := range recs([4]uint64{0, 20, 10}, [4]uint64{10, 15, 50}, [4]uint64{30, 100, 20}, [4]uint64{5, 10, 13}, [4]uint64{40, 10, 123}, [4]uint64{200, 10, 2133}, [4]uint64{150, 100, 21}) {
		var b [16]byte
		r.Encode(b[:])
		log = append(log, b[:]...)
	}
	var pad [16]byte
	invalidRecord.Encode(pad[:])
	log = append(log, pad[:]...)
	fx, _ := os.OpenFile(x, os.O_WRONLY|os.O_APPEND, 0)
	fx.Write(log)
	fx.Close()
	g, err := OpenRW(d, x)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	want := recs([4]uint64{0, 5, 10}, [4]uint64{5, 10, 13}, [4]uint64{15, 10, 55}, [4]uint64{30, 10, 20}, [4]uint64{40, 10, 123}, [4]uint64{50, 80, 40}, [4]uint64{150, 100, 21})
	if !reflect.DeepEqual(g.Index(), want) {
		t.Fatalf("got %v", g.Index())
	}
}

func TestRWConcurrent(t *testing.T) {
	f, _, _ := newRW(t, 8<<20)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 4096)
			for i := 0; i < 200; i++ {
				off := int64((w*200 + i) % 2048 * 4096)
				for j := range p {
					p[j] = byte(off / 4096)
				}
				if i%7 == 0 {
					f.Discard(off, 4096)
				} else {
					f.WriteAt(p, off)
				}
				q := make([]byte, 4096)
				if _, err := f.ReadAt(q, off); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Random ops model test: 3 layers of random aligned writes and discards,
// each committed, then stacked; the stack must equal the in-memory model,
// also with an RW upper and through unaligned stack writes.
func TestModelStack(t *testing.T) {
	const vsize = 4 << 20
	rng := rand.New(rand.NewPCG(154574045, 1))
	model := make([]byte, vsize)
	dir := t.TempDir()
	var lowers []*File
	parent := ""
	for l := 0; l < 3; l++ {
		d, x := filepath.Join(dir, "d"+string(rune('0'+l))), filepath.Join(dir, "x"+string(rune('0'+l)))
		rw, err := Create(d, x, CreateOptions{VirtualSize: vsize, ParentUUID: parent})
		if err != nil {
			t.Fatal(err)
		}
		for op := 0; op < 300; op++ {
			off := rng.Int64N(vsize/512) * 512
			n := min((1+rng.Int64N(256))*512, vsize-off)
			if rng.IntN(5) == 0 {
				if err := rw.Discard(off, n); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+n])
			} else {
				p := testlayer.Random(uint64(l*1000+op), int(n))
				if _, err := rw.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], p)
			}
		}
		var out bytes.Buffer
		uuid := newUUID()
		if _, err := Commit(&out, rw, CommitArgs{UUID: uuid}); err != nil {
			t.Fatal(err)
		}
		rw.Close()
		f, err := NewFile(bytes.NewReader(out.Bytes()), int64(out.Len()), "layer"+string(rune('0'+l)))
		if err != nil {
			t.Fatal(err)
		}
		if f.ParentUUID() != normUUID(parent) || f.UUID() != uuid {
			t.Fatalf("uuid chain %s %s", f.UUID(), f.ParentUUID())
		}
		parent = uuid
		lowers = append(lowers, f)
	}
	if err := VerifyOrder(lowers); err != nil {
		t.Fatal(err)
	}
	d, x := filepath.Join(dir, "ud"), filepath.Join(dir, "ux")
	upper, err := Create(d, x, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStack(lowers, upper)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != vsize || upper.VirtualSize() != vsize {
		t.Fatalf("size %d / upper %d", s.Size(), upper.VirtualSize())
	}
	if got := testlayer.ReadAll(t, s, vsize); !bytes.Equal(got, model) {
		t.Fatalf("stack differs at %d", testlayer.FirstDiff(got, model))
	}
	// Unaligned writes and discards through the stack.
	for op := 0; op < 200; op++ {
		off := rng.Int64N(vsize - 70000)
		n := 1 + rng.Int64N(66000)
		if rng.IntN(4) == 0 {
			if err := s.Discard(off, n); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+n])
		} else {
			p := testlayer.Random(uint64(9000+op), int(n))
			if w, err := s.WriteAt(p, off); err != nil || w != int(n) {
				t.Fatal(w, err)
			}
			copy(model[off:], p)
		}
	}
	if got := testlayer.ReadAll(t, s, vsize); !bytes.Equal(got, model) {
		t.Fatalf("stack after writes differs at %d", testlayer.FirstDiff(got, model))
	}
	// Flatten the whole stack into one layer.
	var flat bytes.Buffer
	if _, err := Commit(&flat, s, CommitArgs{}); err != nil {
		t.Fatal(err)
	}
	ff, err := NewFile(bytes.NewReader(flat.Bytes()), int64(flat.Len()), "flat")
	if err != nil {
		t.Fatal(err)
	}
	if got := testlayer.ReadAll(t, ff, vsize); !bytes.Equal(got, model) {
		t.Fatalf("flattened differs at %d", testlayer.FirstDiff(got, model))
	}
	// Reopen the upper and stack again.
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	upper.Close()
	u2, err := OpenRW(d, x)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := NewStack(lowers, u2)
	defer s2.Close()
	if got := testlayer.ReadAll(t, s2, vsize); !bytes.Equal(got, model) {
		t.Fatalf("reopened stack differs at %d", testlayer.FirstDiff(got, model))
	}
	ro, _ := NewStack(lowers, nil)
	if _, err := ro.WriteAt(make([]byte, 512), 0); err == nil || !ro.ReadOnly() {
		t.Fatal("read-only stack accepted a write")
	}
}

func normUUID(s string) string { n, _ := normalizeUUID(s); return n }
