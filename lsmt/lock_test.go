package lsmt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/internal/filelock"
	"github.com/obdfs/obdfs/internal/testlayer"
)

// One writer per layer: while a writer (Create or OpenRW) has the layer,
// another writer and a quiesced reader are refused with an error naming the
// file and this process; a view is not. Closing the writer frees the layer.
func TestOneWriter(t *testing.T) {
	for _, sparse := range []bool{false, true} {
		t.Run("sparse="+strconv.FormatBool(sparse), func(t *testing.T) {
			dir := t.TempDir()
			d, x := filepath.Join(dir, "data"), filepath.Join(dir, "index")
			w, err := Create(d, x, CreateOptions{VirtualSize: 1 << 20, Sparse: sparse})
			if err != nil {
				t.Fatal(err)
			}
			refused := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, filelock.ErrLocked) {
					t.Fatalf("%s beside a writer: %v, want ErrLocked", what, err)
				}
				if msg := err.Error(); !strings.Contains(msg, d) || !strings.Contains(msg, "open for writing by pid "+strconv.Itoa(os.Getpid())) {
					t.Fatalf("%s: error %q does not name the data file and the holder", what, msg)
				}
			}
			for range 2 { // the creator, then a writer reopening the layer
				_, err := OpenRW(d, x)
				refused("second writer", err)
				_, err = OpenReadOnly(d, x, ReadOnlyOptions{Quiesced: true})
				refused("quiesced reader", err)
				v, err := OpenReadOnly(d, x, ReadOnlyOptions{})
				if sparse {
					refused("view of a sparse layer", err)
				} else if err != nil {
					t.Fatalf("view beside a writer: %v", err)
				} else {
					v.Close()
				}
				w.Close()
				if w, err = OpenRW(d, x); err != nil {
					t.Fatalf("writer after the first closed: %v", err)
				}
			}
			// A quiesced reader keeps writers out until it closes.
			w.Close()
			q, err := OpenReadOnly(d, x, ReadOnlyOptions{Quiesced: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := OpenRW(d, x); !errors.Is(err, filelock.ErrLocked) || !strings.Contains(err.Error(), "open for reading by pid") {
				t.Fatalf("writer beside a quiesced reader: %v", err)
			}
			q.Close()
			w, err = OpenRW(d, x)
			if err != nil {
				t.Fatal(err)
			}
			w.Close()
		})
	}
}

// A read-only open never writes: not the torn-tail repair, not the data
// end alignment, not the inherited virtual size, not a sparse extension;
// and writes through it fail with disk.ErrReadOnly.
func TestReadOnlyNeverWrites(t *testing.T) {
	dir := t.TempDir()
	d, x := filepath.Join(dir, "data"), filepath.Join(dir, "index")
	w, err := Create(d, x, CreateOptions{}) // size 0: inherits in a stack
	if err != nil {
		t.Fatal(err)
	}
	w.setVirtualSize(1 << 20)
	w.WriteAt(testlayer.Random(uint64(1), 4096), 0)
	w.WriteAt(testlayer.Random(uint64(2), 4096), 8192)
	w.setVirtualSize(0)
	w.Close()
	// A torn tail: a record whose data never arrived, half a record, an
	// unaligned data end.
	fx, _ := os.OpenFile(x, os.O_WRONLY|os.O_APPEND, 0)
	var b [RecordSize]byte
	Record{Offset: 100, Length: 8, MOffset: 1000}.Encode(b[:])
	fx.Write(b[:])
	fx.Write(b[:7])
	fx.Close()
	fd, _ := os.OpenFile(d, os.O_WRONLY|os.O_APPEND, 0)
	fd.Write([]byte("xyz"))
	fd.Close()

	sd, sx := filepath.Join(dir, "sdata"), filepath.Join(dir, "sindex")
	sw, err := Create(sd, sx, CreateOptions{VirtualSize: 1 << 20, Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	sw.WriteAt(testlayer.Random(uint64(3), 4096), 4096)
	sw.Close()
	os.Truncate(sd, HeaderSize+8192) // short: a writer would extend it

	before := fileBytes(t, d, x, sd, sx)
	v, err := OpenReadOnly(d, x, ReadOnlyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Index(); len(got) != 2 {
		t.Fatalf("view index %v: want the two records with data", got)
	}
	lower := sealedLayer(t, 1<<20)
	s, err := NewStack([]*File{lower}, v)
	if err != nil {
		t.Fatal(err)
	}
	if !s.ReadOnly() || s.Size() != 1<<20 || v.VirtualSize() != 1<<20 {
		t.Fatalf("stack read-only %v size %d upper size %d", s.ReadOnly(), s.Size(), v.VirtualSize())
	}
	p := make([]byte, 4096)
	if _, err := s.ReadAt(p, 8192); err != nil || !bytes.Equal(p, testlayer.Random(uint64(2), 4096)) {
		t.Fatalf("read through the view: %v", err)
	}
	for _, tc := range []struct {
		op  string
		err error
	}{
		{"stack write", func() error { _, err := s.WriteAt(p, 0); return err }()},
		{"stack discard", s.Discard(0, 4096)},
		{"layer write", func() error { _, err := v.WriteAt(p, 0); return err }()},
		{"layer discard", v.Discard(0, 4096)},
		{"set size", v.setVirtualSize(2 << 20)},
	} {
		if !errors.Is(tc.err, disk.ErrReadOnly) {
			t.Errorf("%s: %v, want disk.ErrReadOnly", tc.op, tc.err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	sv, err := OpenReadOnly(sd, sx, ReadOnlyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sv.ReadAt(p, 4096); err != nil || !bytes.Equal(p, testlayer.Random(uint64(3), 4096)) {
		t.Fatalf("read through the sparse view: %v", err)
	}
	sv.Close()
	if !bytes.Equal(fileBytes(t, d, x, sd, sx), before) {
		t.Fatal("a read-only open changed the layer's files")
	}
}

// sealedLayer is a committed layer of the given size with no data.
func sealedLayer(t *testing.T, vsize int64) *File {
	t.Helper()
	dir := t.TempDir()
	w, err := Create(filepath.Join(dir, "d"), filepath.Join(dir, "x"), CreateOptions{VirtualSize: vsize})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var out bytes.Buffer
	if _, err := Commit(&out, w, CommitArgs{}); err != nil {
		t.Fatal(err)
	}
	f, err := NewFile(bytes.NewReader(out.Bytes()), int64(out.Len()), "lower")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Views opened while a writer appends see a consistent prefix: every view
// opens, holds at least what was written before it was opened, reads back
// exactly what was written, and the writer's layer reopens whole after.
func TestViewOfLiveLayer(t *testing.T) {
	w, d, x := newRW(t, 16<<20)
	const blocks = 2048 // 4 KiB writes, each block rewritten in turn
	var mu sync.Mutex
	written := 0 // writes acknowledged so far
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := range 3 * blocks {
			if _, err := w.WriteAt(testlayer.Random(uint64(i), 4096), int64(i%blocks)*4096); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			written = i + 1
			mu.Unlock()
		}
	}()
	views := 0
	p := make([]byte, 4096)
	for {
		mu.Lock()
		before := written
		mu.Unlock()
		v, err := OpenReadOnly(d, x, ReadOnlyOptions{})
		if err != nil {
			t.Fatalf("view %d beside a writer: %v", views, err)
		}
		views++
		// The last write to each block acknowledged before the open is
		// there, or a later one.
		for blk := range blocks {
			last := -1
			for i := blk; i < before; i += blocks {
				last = i
			}
			if _, err := v.ReadAt(p, int64(blk)*4096); err != nil {
				t.Fatal(err)
			}
			if last < 0 {
				continue
			}
			ok := false
			for i := last; i < 3*blocks && !ok; i += blocks {
				ok = bytes.Equal(p, testlayer.Random(uint64(i), 4096))
			}
			if !ok {
				t.Fatalf("view %d: block %d holds none of the writes from %d on", views, blk, last)
			}
		}
		v.Close()
		select {
		case <-done:
			wg.Wait()
			w.Close()
			g, err := OpenRW(d, x)
			if err != nil {
				t.Fatalf("layer after %d views: %v", views, err)
			}
			defer g.Close()
			for blk := range blocks {
				g.ReadAt(p, int64(blk)*4096)
				if !bytes.Equal(p, testlayer.Random(uint64(2*blocks+blk), 4096)) {
					t.Fatalf("block %d lost its last write", blk)
				}
			}
			t.Logf("%d views beside the writer", views)
			if views < 2 {
				t.Log("the writer finished before a second view: the test proved little")
			}
			return
		default:
		}
	}
}
