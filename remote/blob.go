package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/obdfs/obdfs/internal/regfile"
)

// Blob is one layer blob: an io.ReaderAt over its bytes. A registry blob is
// fetched lazily and cached persistently; a blob of an OCI layout is read from
// its file. ReadAt, Invalidate and Fetch may be called concurrently; Close
// must not race them.
type Blob struct {
	name   string // for errors: docker://HOST/REPO@DIGEST or the file path
	digest string
	size   int64

	local *os.File // OCI layout blob, else nil

	cl     *client
	cf     *cacheFile
	chunk  int64
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // fetches in flight

	mu        sync.Mutex
	inflight  map[int64]*flight // chunk -> fetch of a run holding it
	aheadBits []uint64          // chunks readahead brought that no reader used yet
	closed    atomic.Bool

	ra           streams
	aheadPending atomic.Int64
	bgState      atomic.Pointer[string]
	replayState  atomic.Pointer[string]
	trace        *traceLayer    // recording the ranges read, or nil
	recorder     *TraceRecorder // saved on Close, or nil

	stats blobCounters
}

type flight struct {
	done chan struct{}
	err  error
}

// Stats are a Blob's counters since it was opened.
type Stats struct {
	Reads        int64 // ReadAt calls
	ReadBytes    int64 // bytes returned by ReadAt
	Fetches      int64 // range GETs that succeeded (retries not counted)
	FetchedBytes int64 // bytes received from the registry into the cache
	Errors       int64 // ReadAt calls that failed
	Invalidated  int64 // Invalidate calls

	AheadFetches    int64 // of Fetches, readahead and trace replay GETs
	AheadBytes      int64 // of FetchedBytes, brought by readahead and trace replay
	AheadHits       int64 // chunks brought ahead that a reader then used
	BackgroundBytes int64 // of FetchedBytes, brought by the background download

	Cached     int64  // bytes of the blob in the persistent cache
	Verified   bool   // the cached blob is complete and matched its digest
	Damaged    int64  // cached chunks that failed their sum and were fetched again
	Background string // background download: "", waiting, running, done, ...
	Replay     string // trace replay: "", running, done
}

type blobCounters struct {
	reads, readBytes, fetches, fetchedBytes, errors, invalidated atomic.Int64
	aheadFetches, aheadBytes, aheadHits, backgroundBytes         atomic.Int64
}

func (b *Blob) Size() int64    { return b.size }
func (b *Blob) Digest() string { return b.digest }

// Name is the blob's reference for messages: docker://HOST/REPO@DIGEST, or
// the blob file of an OCI layout.
func (b *Blob) Name() string { return b.name }

// Stats returns the counters.
func (b *Blob) Stats() Stats {
	st := Stats{
		Reads: b.stats.reads.Load(), ReadBytes: b.stats.readBytes.Load(),
		Fetches: b.stats.fetches.Load(), FetchedBytes: b.stats.fetchedBytes.Load(),
		Errors: b.stats.errors.Load(), Invalidated: b.stats.invalidated.Load(),
		AheadFetches: b.stats.aheadFetches.Load(), AheadBytes: b.stats.aheadBytes.Load(),
		AheadHits: b.stats.aheadHits.Load(), BackgroundBytes: b.stats.backgroundBytes.Load(),
		Cached: b.CachedBytes(), Background: b.backgroundState(),
	}
	if p := b.replayState.Load(); p != nil {
		st.Replay = *p
	}
	if b.cf != nil {
		b.cf.mu.Lock()
		st.Verified = b.cf.verified
		b.cf.mu.Unlock()
		st.Damaged = b.cf.damaged.Load()
	}
	return st
}

// CachedBytes is how many bytes of the blob are in the persistent cache
// (all of them for a local blob).
func (b *Blob) CachedBytes() int64 {
	if b.cf == nil {
		return b.size
	}
	return b.cf.presentBytes()
}

// OpenBlob opens one blob of a repository lazily. repoBlobURL is
// https://HOST/v2/REPO/blobs as in overlaybd configs (http:// means plain
// HTTP); size may be 0, then it is taken from the cache or probed with a
// one-byte GET. ctx bounds every fetch of the Blob for its whole life.
func OpenBlob(ctx context.Context, repoBlobURL, digest string, size int64, o Options) (*Blob, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	repo, insecure, err := parseRepoBlobURL(repoBlobURL)
	if err != nil {
		return nil, err
	}
	if insecure {
		o.Insecure = true
		if repo, err = name.NewRepository(repo.Name(), name.Insecure); err != nil {
			return nil, fmt.Errorf("repoBlobUrl %q: %w", repoBlobURL, err)
		}
	}
	cl, err := clientFor(repo, o)
	if err != nil {
		return nil, err
	}
	return openRemote(ctx, cl, digest, size, o)
}

// parseRepoBlobURL splits https://HOST/v2/REPO/blobs.
func parseRepoBlobURL(s string) (name.Repository, bool, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return name.Repository{}, false, fmt.Errorf("repoBlobUrl %q: want https://HOST/v2/REPO/blobs", s)
	}
	p := strings.TrimSuffix(u.Path, "/")
	rest, ok := strings.CutPrefix(p, "/v2/")
	repoPath, ok2 := strings.CutSuffix(rest, "/blobs")
	if !ok || !ok2 || repoPath == "" {
		return name.Repository{}, false, fmt.Errorf("repoBlobUrl %q: want https://HOST/v2/REPO/blobs", s)
	}
	opts := []name.Option{name.WeakValidation}
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	host := u.Host
	if host == "registry-1.docker.io" || host == "registry-1.docker.io:443" {
		// ACI writes Docker Hub's API host into repoBlobUrl; credentials
		// (docker login) and go-containerregistry know it as docker.io.
		host = name.DefaultRegistry
	}
	repo, err := name.NewRepository(host+"/"+repoPath, opts...)
	if err != nil {
		return name.Repository{}, false, fmt.Errorf("repoBlobUrl %q: %w", s, err)
	}
	return repo, u.Scheme == "http", nil
}

func openRemote(ctx context.Context, cl *client, digest string, size int64, o Options) (*Blob, error) {
	hexd, sum, err := splitDigest(digest)
	if err != nil {
		return nil, err
	}
	bname := fmt.Sprintf("docker://%s@%s", cl.repo.Name(), digest)
	cd, err := cacheDirFor(o.CacheDir, o.CacheMax)
	if err != nil {
		return nil, err
	}
	if size == 0 {
		size = cd.cachedSize(hexd)
	}
	if size == 0 {
		if size, err = cl.probeSize(ctx, digest); err != nil {
			return nil, fmt.Errorf("%s: %w", bname, err)
		}
	}
	if size < 0 {
		return nil, fmt.Errorf("%s: negative size %d", bname, size)
	}
	cf, err := cd.openFile(hexd, sum, size, o.RefillSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bname, err)
	}
	bctx, cancel := context.WithCancel(ctx)
	b := &Blob{
		name: bname, digest: digest, size: size,
		cl: cl, cf: cf, chunk: o.RefillSize, ctx: bctx, cancel: cancel,
		inflight:  map[int64]*flight{},
		aheadBits: make([]uint64, (cf.n+63)/64),
	}
	if o.Readahead > 0 {
		b.ra.max = max(o.Readahead/o.RefillSize, 1)
	}
	if o.RecordTrace != nil {
		b.recorder = o.RecordTrace
		b.trace = o.RecordTrace.layer(digest, size, o.RefillSize)
	}
	if o.Trace != nil {
		if ranges := o.Trace.Layers[digest]; len(ranges) > 0 {
			b.replayState.Store(ptr(replayRunning))
			b.wg.Go(func() { b.replay(ranges) })
		}
	}
	if o.Background.Enable {
		b.setBackground(bgWaiting)
		b.wg.Go(func() { b.background(o.Background) })
	}
	return b, nil
}

// openLocal opens a blob file of an OCI layout.
func openLocal(path, digest string, size int64) (*Blob, error) {
	f, st, err := regfile.OpenStat(path, os.O_RDONLY) // a FIFO must not hang the open
	if err != nil {
		return nil, err
	}
	if size > 0 && st.Size() != size {
		f.Close()
		return nil, fmt.Errorf("%s: %d bytes, the manifest says %d", path, st.Size(), size)
	}
	return &Blob{name: path, digest: digest, size: st.Size(), local: f}, nil
}

// ReadAt reads len(p) bytes at off; a read reaching past the end returns
// io.EOF with the bytes before it. Missing chunks are fetched (one GET per
// run of adjacent missing chunks, the runs of one read in parallel; a chunk
// already being fetched for another reader is waited for, not fetched
// again). A read that continues a sequential stream also starts readahead.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	if b.closed.Load() {
		return 0, fmt.Errorf("%s: %w", b.name, ErrClosed)
	}
	b.stats.reads.Add(1)
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", b.name, off)
	}
	if off >= b.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > b.size-off {
		p, eof = p[:b.size-off], io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.local != nil {
		n, err := b.local.ReadAt(p, off)
		b.stats.readBytes.Add(int64(n))
		if err == nil {
			err = eof
		}
		return n, err
	}
	first, last := off/b.chunk, (off+int64(len(p))-1)/b.chunk
	if b.trace != nil {
		b.trace.note(first, last)
	}
	if from, to := b.ra.observe(first, last, b.cf.n); from <= to {
		b.readahead(from, to)
	}
	if err := b.ensure(first, last); err != nil {
		b.stats.errors.Add(1)
		return 0, fmt.Errorf("%s: %w", b.name, err)
	}
	b.countAheadHits(first, last)
	n, err := b.cf.f.ReadAt(p, off)
	b.stats.readBytes.Add(int64(n))
	if err != nil {
		b.stats.errors.Add(1)
		return n, fmt.Errorf("%s: cache read: %w", b.name, err)
	}
	return n, eof
}

// maxRun bounds the bytes of one range GET.
const maxRun = 4 << 20

// run is chunks [first, last] fetched with one GET under flight f.
type run struct {
	first, last int64
	f           *flight
}

// claim marks the missing chunks of [first, last] that nobody fetches as
// ours, in runs of adjacent chunks of at most maxChunks, and returns them
// with the flights of chunks others are fetching.
func (b *Blob) claim(first, last, maxChunks int64) (runs []run, waits []*flight) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := first; i <= last; i++ {
		if b.cf.present(i) {
			continue
		}
		if f := b.inflight[i]; f != nil {
			if len(waits) == 0 || waits[len(waits)-1] != f {
				waits = append(waits, f)
			}
			continue
		}
		if n := len(runs); n > 0 && runs[n-1].last == i-1 && i-runs[n-1].first < maxChunks {
			runs[n-1].last = i
			b.inflight[i] = runs[n-1].f
			continue
		}
		f := &flight{done: make(chan struct{})}
		runs = append(runs, run{first: i, last: i, f: f})
		b.inflight[i] = f
	}
	return runs, waits
}

// complete ends run r's flight with err.
func (b *Blob) complete(r run, err error) {
	b.mu.Lock()
	for i := r.first; i <= r.last; i++ {
		if b.inflight[i] == r.f {
			delete(b.inflight, i)
		}
	}
	b.mu.Unlock()
	r.f.err = err
	close(r.f.done)
}

// ensure makes chunks [first, last] present for a reader.
func (b *Blob) ensure(first, last int64) error {
	// A chunk can be invalidated between its fetch and our look; a few
	// rounds cover that without looping forever on a flapping range.
	for round := 0; round < 4; round++ {
		if b.cf.firstMissing(first, last) < 0 {
			// Cached chunks are checked against the sums recorded at
			// fetch once per open before they are served (cache.go).
			dropped, err := b.cf.checkChunks(first, last)
			if err != nil || !dropped {
				return err
			}
		}
		runs, waits := b.claim(first, last, maxRun/b.chunk)
		errs := make([]error, len(runs), len(runs)+len(waits))
		if len(runs) == 1 {
			errs[0] = b.fetchRun(runs[0], prioRead, false)
		} else {
			var wg sync.WaitGroup
			for k, r := range runs {
				wg.Go(func() { errs[k] = b.fetchRun(r, prioRead, false) })
			}
			wg.Wait()
		}
		for _, f := range waits {
			<-f.done
			errs = append(errs, f.err)
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	if b.cf.firstMissing(first, last) < 0 {
		if dropped, err := b.cf.checkChunks(first, last); err != nil || !dropped {
			return err
		}
	}
	return fmt.Errorf("chunks %d-%d keep being invalidated", first, last)
}

// prefetch fetches the missing chunks of [first, last] at priority p, in
// GETs of up to maxRun, one at a time, and waits for them (and, with wait,
// for chunks of the range that others were fetching). Each GET's slot is
// taken before its chunks are claimed, so a reader never waits for a chunk
// whose GET is still queued. It returns the first error (ctx's if
// cancelled).
func (b *Blob) prefetch(ctx context.Context, first, last int64, p prio, wait bool) error {
	per := maxRun / b.chunk
	for i := first; i <= last; i += per {
		j := min(i+per-1, last)
		if b.cf.firstMissing(i, j) < 0 {
			continue
		}
		if err := b.cl.acquire(ctx, p); err != nil {
			return err
		}
		runs, waits := b.claim(i, j, per)
		var err error
		for _, r := range runs {
			if e := b.fetchRun(r, p, true); e != nil && err == nil {
				err = e
			}
		}
		b.cl.release(p)
		if wait {
			for _, f := range waits {
				select {
				case <-f.done:
					if f.err != nil && err == nil {
						err = f.err
					}
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

var chunkPools sync.Map // int64 chunk size -> *sync.Pool of *[]byte

func getChunkBuf(size int64) *[]byte {
	p, _ := chunkPools.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return p.(*sync.Pool).Get().(*[]byte)
}

func putChunkBuf(size int64, b *[]byte) {
	if p, ok := chunkPools.Load(size); ok {
		p.(*sync.Pool).Put(b)
	}
}

// fetchRun GETs run r with one request (retried), stores each chunk as it
// completes and ends r's flight. held says the caller holds a slot of class
// p; otherwise fetchRun takes one.
func (b *Blob) fetchRun(r run, p prio, held bool) (err error) {
	defer func() { b.complete(r, err) }()
	if b.closed.Load() {
		return ErrClosed
	}
	b.wg.Add(1)
	defer b.wg.Done()
	if !held {
		if err := b.cl.acquire(b.ctx, p); err != nil {
			return err
		}
		defer b.cl.release(p)
	}
	off := r.first * b.chunk
	end := min((r.last+1)*b.chunk, b.size)
	bufp := getChunkBuf(b.chunk)
	defer putChunkBuf(b.chunk, bufp)
	buf := *bufp
	// The body is read straight into a chunk-sized buffer; since attempt
	// reads with ReadFull of at most len(buf) and the run starts on a chunk
	// boundary, each sink call is exactly one chunk (or the short last one).
	start, first := time.Now(), true
	sink := func(q []byte, at int64) error {
		if first {
			// Time to the first chunk: about one round trip (plus the
			// chunk's transfer), for the readahead window's bound.
			first = false
			b.ra.noteRTT(time.Since(start))
		}
		if at%b.chunk != 0 {
			return fmt.Errorf("internal: unaligned piece at %d", at)
		}
		if at < off && b.cf.present(at/b.chunk) {
			return nil // a whole-blob answer passing a chunk we have
		}
		if err := b.cf.store(at/b.chunk, q); err != nil {
			return err
		}
		b.stats.fetchedBytes.Add(int64(len(q)))
		switch p {
		case prioAhead:
			b.stats.aheadBytes.Add(int64(len(q)))
			b.markAhead(at / b.chunk)
		case prioBackground:
			b.stats.backgroundBytes.Add(int64(len(q)))
		}
		return nil
	}
	err = b.cl.fetch(withPrio(b.ctx, p), b.digest, b.size, off, end-off, sink, buf)
	if err == nil {
		b.stats.fetches.Add(1)
		if p == prioAhead {
			b.stats.aheadFetches.Add(1)
		}
	}
	return err
}

// Invalidate drops [off, off+length) (widened to whole chunks) from the
// persistent cache, so the next read fetches it again. The ZFile reader calls
// it when a block fails its CRC.
// It returns an error when the range cannot be refetched (a local blob, a
// closed Blob) or the cache map could not be saved.
func (b *Blob) Invalidate(off, length int64) error {
	if b.cf == nil {
		return fmt.Errorf("%s: a local blob cannot be refetched", b.name)
	}
	if b.closed.Load() {
		return fmt.Errorf("%s: %w", b.name, ErrClosed)
	}
	b.stats.invalidated.Add(1)
	return b.cf.invalidate(off, length)
}

// Fetch downloads every missing byte of the blob into the cache with up to
// jobs GETs of up to 16 MiB in flight, then checks the whole blob against its
// digest (ErrDigest: the cached copy was dropped). progress, if not nil, is
// called with the bytes present so far. It resumes where an earlier,
// interrupted Fetch stopped. ctx can cancel it.
func (b *Blob) Fetch(ctx context.Context, jobs int, progress func(have, total int64)) error {
	if b.local != nil {
		if progress != nil {
			progress(b.size, b.size)
		}
		return nil
	}
	if jobs <= 0 {
		jobs = 4
	}
	const pullRun = 16 << 20
	per := max(pullRun/b.chunk, 1)
	mism := b.cf.mismatches.Load()
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	report := func() {
		if progress != nil {
			progress(b.cf.presentBytes(), b.size)
		}
	}
	report()
	for start := int64(0); start < b.cf.n; start += per {
		if ctx.Err() != nil {
			break
		}
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		first, last := start, min(start+per, b.cf.n)-1
		if b.cf.firstMissing(first, last) < 0 && b.cf.allChecked(first, last) {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := b.ensureCtx(ctx, first, last)
			mu.Lock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			report()
		})
	}
	wg.Wait()
	err := firstErr
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		// Hashed again even if it matched once: a cached copy can change
		// on disk, and "verified" must describe the bytes there now.
		err = b.cf.rehash()
	}
	if err != nil && b.cf.mismatches.Load() > mism && !errors.Is(err, ErrDigest) {
		// The check of the completed blob (run in the background by the
		// fetch that completed it) dropped it.
		err = fmt.Errorf("the downloaded blob did not match its digest and was dropped: %w (then: %v)", ErrDigest, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", b.name, err)
	}
	report()
	return nil
}

// ensureCtx is ensure for Fetch: whole 16 MiB runs, cancelled with ctx.
func (b *Blob) ensureCtx(ctx context.Context, first, last int64) error {
	// Fetch's ctx is not the Blob's: a cancelled pull stops scheduling new
	// GETs but must not fail readers waiting on the ones in flight.
	for i := first; i <= last; i += maxRun / b.chunk {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := b.ensure(i, min(i+maxRun/b.chunk-1, last)); err != nil {
			return err
		}
	}
	return nil
}

// Close stops fetches in flight, saves the cache map and releases the
// files.
func (b *Blob) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	if b.local != nil {
		return b.local.Close()
	}
	b.cancel()
	b.wg.Wait()
	err := b.cf.close()
	if b.recorder != nil {
		if serr := b.recorder.Save(); serr != nil {
			slog.Error("trace not saved", "err", serr)
		}
	}
	return err
}
