package remote

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/obdfs/obdfs/internal/atomicfile"
)

// Start-up traces (overlaybd's recordTracePath): a TraceRecorder notes the
// blob ranges readers touch, per layer digest, in the order they are first
// read; a later cold open replays a Trace by fetching those ranges ahead of
// the reader. Keyed by digest, a trace recorded with one image serves every
// image that shares a layer with it.
//
// The file is JSON:
//
//	{
//	  "version": 1,
//	  "layers": {
//	    "sha256:<64 hex>": [[OFFSET, LENGTH], ...],
//	    ...
//	  }
//	}
//
// Each pair is a byte range of the layer's blob (as stored in the registry:
// the tar wrapper and ZFile included), first-read order. Ranges are whole
// refill chunks of the recording run, adjacent ones merged; a replay with
// another RefillSize widens them to its own chunks. A range must lie inside
// the blob replayed (ranges that do not are ignored with a warning), and a
// file is at most maxTraceFile bytes.

const (
	traceVersion = 1
	maxTraceFile = 64 << 20
	// replayJobs bounds the GETs in flight for one blob's replay (within
	// the repository's readahead budget).
	replayJobs = 8
	// replayGap: ranges of the trace this many chunks apart or closer are
	// fetched with one GET (the chunks between are fetched too): fewer,
	// larger GETs fill the link sooner.
	replayGap = 2
)

// Trace is a parsed trace file: blob ranges per layer digest.
type Trace struct {
	Layers map[string][][2]int64
}

type traceFile struct {
	Version int                   `json:"version"`
	Layers  map[string][][2]int64 `json:"layers"`
}

// LoadTrace reads and checks a trace file.
func LoadTrace(path string) (*Trace, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	if st.Size() > maxTraceFile {
		return nil, fmt.Errorf("trace %s: %d bytes, at most %d", path, st.Size(), maxTraceFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	t, err := ParseTrace(b)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return t, nil
}

// ParseTrace decodes and checks a trace.
func ParseTrace(b []byte) (*Trace, error) {
	var f traceFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f.Version != traceVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, traceVersion)
	}
	for d, rs := range f.Layers {
		if _, _, err := splitDigest(d); err != nil {
			return nil, err
		}
		for i, r := range rs {
			if r[0] < 0 || r[1] <= 0 || r[0] > 1<<56 || r[1] > 1<<56 {
				return nil, fmt.Errorf("layer %s: range %d [%d, +%d) is not a byte range", d, i, r[0], r[1])
			}
		}
	}
	if f.Layers == nil {
		f.Layers = map[string][][2]int64{}
	}
	return &Trace{Layers: f.Layers}, nil
}

// TraceRecorder records the ranges read from every blob opened with it and
// writes them to its file each time such a blob is closed (so unmounting or
// removing a stack leaves the trace on disk).
type TraceRecorder struct {
	path string
	mu   sync.Mutex
	m    map[string]*traceLayer
	// saveMu serialises writes of the file.
	saveMu sync.Mutex
}

// NewTraceRecorder records into the file path (written on blob Close).
func NewTraceRecorder(path string) *TraceRecorder {
	return &TraceRecorder{path: path, m: map[string]*traceLayer{}}
}

var recorders sync.Map // path -> *TraceRecorder

// TraceRecorderFor returns the process's recorder of path, so that every
// stack recording into one file adds to it rather than overwriting it.
func TraceRecorderFor(path string) *TraceRecorder {
	r, _ := recorders.LoadOrStore(path, NewTraceRecorder(path))
	return r.(*TraceRecorder)
}

type traceLayer struct {
	chunk  int64
	mu     sync.Mutex
	seen   []uint64
	ranges [][2]int64
	size   int64
}

// layer returns the record of a blob (shared by every Blob of that digest).
func (r *TraceRecorder) layer(digest string, size, chunk int64) *traceLayer {
	r.mu.Lock()
	defer r.mu.Unlock()
	tl := r.m[digest]
	if tl == nil || tl.chunk != chunk || tl.size != size {
		n := (size + chunk - 1) / chunk
		tl = &traceLayer{chunk: chunk, size: size, seen: make([]uint64, (n+63)/64)}
		r.m[digest] = tl
	}
	return tl
}

// note records chunks [first, last] as read.
func (tl *traceLayer) note(first, last int64) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := first; i <= last; i++ {
		w, m := &tl.seen[i/64], uint64(1)<<(i%64)
		if *w&m != 0 {
			continue
		}
		*w |= m
		off := i * tl.chunk
		n := min(tl.chunk, tl.size-off)
		if k := len(tl.ranges); k > 0 && tl.ranges[k-1][0]+tl.ranges[k-1][1] == off {
			tl.ranges[k-1][1] += n
			continue
		}
		tl.ranges = append(tl.ranges, [2]int64{off, n})
	}
}

// Save writes the trace file atomically (0600).
func (r *TraceRecorder) Save() error {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	f := traceFile{Version: traceVersion, Layers: map[string][][2]int64{}}
	r.mu.Lock()
	for d, tl := range r.m {
		tl.mu.Lock()
		if len(tl.ranges) > 0 {
			f.Layers[d] = append([][2]int64(nil), tl.ranges...)
		}
		tl.mu.Unlock()
	}
	r.mu.Unlock()
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	af, err := atomicfile.Create(r.path, 0o600)
	if err != nil {
		return fmt.Errorf("trace %s: %w", r.path, err)
	}
	if _, err := af.Write(append(b, '\n')); err != nil {
		af.Abort()
		return fmt.Errorf("trace %s: %w", r.path, err)
	}
	if err := af.Commit(); err != nil {
		return fmt.Errorf("trace %s: %w", r.path, err)
	}
	return nil
}

// Replay states, as Stats.Replay reports them.
const (
	replayRunning = "running"
	replayDone    = "done"
)

// replay fetches the trace's ranges of b in order, replayJobs at a time, at
// prioAhead; the caller started it with b.wg.
func (b *Blob) replay(ranges [][2]int64) {
	defer b.replayState.Store(ptr(replayDone))
	// Chunk runs in first-read order; runs of the trace that fall in one
	// chunk of ours, or a few chunks apart, become one.
	type span struct{ first, last int64 }
	var spans []span
	bad := 0
	for _, r := range ranges {
		if r[0] >= b.size || r[1] > b.size-r[0] {
			bad++
			continue
		}
		s := span{r[0] / b.chunk, (r[0] + r[1] - 1) / b.chunk}
		if k := len(spans); k > 0 && spans[k-1].last+1+replayGap >= s.first && spans[k-1].first <= s.first && s.last-spans[k-1].first < maxRun/b.chunk {
			spans[k-1].last = max(spans[k-1].last, s.last)
			continue
		}
		spans = append(spans, s)
	}
	if bad > 0 {
		slog.Warn("trace: ranges outside the blob ignored", "blob", b.name, "ranges", bad)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(replayJobs, len(spans)) {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(len(spans)) || b.ctx.Err() != nil {
					return
				}
				_ = b.prefetch(b.ctx, spans[k].first, spans[k].last, prioAhead, false)
			}
		})
	}
	wg.Wait()
}

func ptr(s string) *string { return &s }
