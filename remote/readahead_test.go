package remote

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// randomBlob pushes size random bytes to an in-process registry and returns
// its repoBlobUrl, digest, content and fault handler.
func randomBlob(t testing.TB, size int) (string, string, []byte, *fault) {
	t.Helper()
	host, f := inproc(t)
	data := testlayer.Random(uint64(size), size)
	d := putBlob(t, host, "ra/blob", data)
	return "http://" + host + "/v2/ra/blob/blobs", d, data, f
}

func TestReadahead(t *testing.T) {
	const size, chunk = 8 << 20, 64 << 10 // 128 chunks
	url, dig, data, f := randomBlob(t, size)
	for _, tc := range []struct {
		name      string
		readahead int64
		// offsets read, in order, 16 KiB each
		offsets []int64
		// want: GETs at most/at least, ahead fetches
		maxGets, minGets int64
		ahead            bool
	}{
		{"sequential on", 1 << 20, seqOffsets(size, 16<<10), 80, 1, true},
		{"sequential off", -1, seqOffsets(size, 16<<10), 128, 128, false},
		// Stride of 5 chunks: never continues a stream, nothing ahead.
		{"strided on", 1 << 20, stridedOffsets(128, 5, 40, chunk), 40, 40, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t)
			o.RefillSize, o.Readahead = chunk, tc.readahead
			b, err := OpenBlob(context.Background(), url, dig, size, o)
			if err != nil {
				t.Fatal(err)
			}
			// A round trip, so that the window grows (it is bounded by what
			// the reader consumes in two of them).
			f.latency = 5 * time.Millisecond
			defer func() { f.latency = 0 }()
			g0 := f.gets.Load()
			p := make([]byte, 16<<10)
			for _, off := range tc.offsets {
				if _, err := b.ReadAt(p, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(p, data[off:off+int64(len(p))]) {
					t.Fatalf("bytes at %d differ", off)
				}
			}
			if err := b.Close(); err != nil { // waits for readahead in flight
				t.Fatal(err)
			}
			st := b.Stats()
			gets := f.gets.Load() - g0
			if gets != st.Fetches || gets > tc.maxGets || gets < tc.minGets {
				t.Errorf("%d GETs (Stats: %d), want %d..%d", gets, st.Fetches, tc.minGets, tc.maxGets)
			}
			if (st.AheadFetches > 0) != tc.ahead || (st.AheadHits > 0) != tc.ahead {
				t.Errorf("ahead fetches %d, hits %d; want readahead %v", st.AheadFetches, st.AheadHits, tc.ahead)
			}
			// Readahead never fetches past what a sequential reader reads
			// to the end, nor anything twice.
			if tc.ahead && st.FetchedBytes != size {
				t.Errorf("fetched %d bytes of a %d-byte blob read whole", st.FetchedBytes, size)
			}
			if !tc.ahead && st.FetchedBytes != int64(len(tc.offsets))*chunk && tc.readahead > 0 {
				t.Errorf("fetched %d bytes for %d reads of distinct chunks", st.FetchedBytes, len(tc.offsets))
			}
		})
	}
}

func seqOffsets(size, step int64) []int64 {
	var out []int64
	for off := int64(0); off < size; off += step {
		out = append(out, off)
	}
	return out
}

func stridedOffsets(chunks, stride, n int, chunk int64) []int64 {
	var out []int64
	for i := range n {
		out = append(out, int64((i*stride)%chunks)*chunk)
	}
	return out
}

// TestReadPriority: with every readahead slot busy on a slow registry and
// more readahead queued, a reader's miss is served by its own slot at once,
// not after the queued readahead.
func TestReadPriority(t *testing.T) {
	const size, chunk = 4 << 20, 64 << 10
	url, dig, data, f := randomBlob(t, size)
	o := testOptions(t)
	o.RefillSize, o.MaxInflight = chunk, 2
	b, err := OpenBlob(context.Background(), url, dig, size, o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f.latency = 400 * time.Millisecond
	// 12 ranges of 4 chunks at prioAhead, 2 slots: at least 6 rounds of
	// 400 ms. The reader's chunk (the last one) is in none of them.
	var wg sync.WaitGroup
	var doneAhead sync.WaitGroup
	var finished int64
	var mu sync.Mutex
	for k := range 12 {
		doneAhead.Add(1)
		wg.Go(func() {
			defer doneAhead.Done()
			if err := b.prefetch(context.Background(), int64(4*k), int64(4*k+3), prioAhead, false); err != nil {
				t.Error(err)
			}
			mu.Lock()
			finished++
			mu.Unlock()
		})
	}
	for f.inflight.Load() < 2 { // the readahead slots are taken
		time.Sleep(time.Millisecond)
	}
	p := make([]byte, 4096)
	off := int64(size - chunk)
	if _, err := b.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	n := finished
	mu.Unlock()
	if !bytes.Equal(p, data[off:off+4096]) {
		t.Fatal("wrong bytes")
	}
	// Served alongside the first round or two, not after the ten queued.
	if n > 6 {
		t.Errorf("the reader's miss was served after %d of the 12 readahead fetches", n)
	}
	wg.Wait()
	if f.maxIn.Load() > 3 {
		t.Errorf("%d GETs in flight; readahead's budget is 2 and one reader", f.maxIn.Load())
	}
}
