package remote

import (
	"sync"
	"sync/atomic"
	"time"
)

// Readahead for a lone reader on a high-RTT link: without it a sequential
// reader pays one round trip per chunk. Each Blob tracks a few sequential
// streams (a ZFile layer is read at its index and at its data, several files
// at once); a read that continues a stream grows the stream's window, from
// initialWindow chunks doubling up to Options.Readahead, and the chunks of
// the window ahead of the reader are fetched in the background at prioAhead,
// in GETs of up to maxRun, several in flight. A read that continues no
// stream takes over the least recently used one with an empty window, so
// random access fetches nothing ahead.

// numStreams is how many sequential streams a Blob follows at once.
const numStreams = 4

// initialWindow is the window, in chunks, of a stream when it is first
// seen to be sequential (then doubled per chunk the reader reaches): 1 MiB
// with the default RefillSize, as the kernel's initial readahead.
const initialWindow = 4

// minRun is how many chunks a stream must have read without a gap before
// readahead starts. The kernel's own readahead of a small file (1 MiB of
// the disk, about two compressed chunks) then starts at most a small window
// (initialWindow, bounded by the reader's pace), not megabytes.
const minRun = 2

// maxSkip is the largest gap, in chunks, between a stream's last read and
// a read still taken as continuing it (the kernel's parallel readahead
// arrives a little out of order). Reads further ahead start a new stream:
// with a larger tolerance, scattered reads (a tar of many small files) were
// taken for a sequential reader and readahead fetched megabytes never read.
const maxSkip = 8

// maxAheadPending bounds the readahead GETs queued or in flight per Blob.
const maxAheadPending = 16

type stream struct {
	next   int64  // chunk after the furthest read so far
	ahead  int64  // first chunk readahead has not asked for
	window int64  // chunks kept ahead of next; 0 until sequential
	used   uint64 // last use, for LRU; 0 = empty slot
	run    int64  // chunks reached without a gap

	// The reader's recent pace: chunks reached since markAt.
	markAt    time.Time
	markChunk int64
	pace      float64 // chunks per second over the last interval
}

type streams struct {
	mu   sync.Mutex
	max  int64 // window bound in chunks; 0 disables readahead
	tick uint64
	s    [numStreams]stream
	rtt  atomic.Int64 // ns: a recent low time to a GET's first chunk
}

// noteRTT records a GET's time to first chunk. The estimate follows drops
// at once and rises slowly (queueing behind other GETs inflates samples).
func (ss *streams) noteRTT(d time.Duration) {
	for {
		cur := ss.rtt.Load()
		next := int64(d)
		if cur != 0 && next > cur {
			next = cur + (next-cur)/16
		}
		if ss.rtt.CompareAndSwap(cur, next) {
			return
		}
	}
}

// bound is the window a stream needs: what the reader consumes in two
// round trips at its recent pace (more would only be fetched early, and
// wasted if the reader stops), at least initialWindow, at most max.
func (ss *streams) bound(st *stream) int64 {
	rtt := time.Duration(ss.rtt.Load())
	if rtt <= 0 || st.pace <= 0 {
		return min(4*initialWindow, ss.max) // until the pace is known
	}
	return min(int64(2*st.pace*rtt.Seconds())+initialWindow, ss.max)
}

// observe records a read of chunks [first, last] of a blob of n chunks and
// returns the chunks readahead should fetch now (from > to: none).
func (ss *streams) observe(first, last, n int64) (from, to int64) {
	if ss.max == 0 {
		return 1, 0
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.tick++
	var st *stream
	for i := range ss.s {
		c := &ss.s[i]
		// Continuing: starts in or just after the last chunk read, or
		// inside the window ahead (parallel readers of one stream, such as
		// the kernel's async readahead, arrive out of order).
		if c.used != 0 && first >= c.next-2 && first <= c.next+min(max(c.window/4, 1), maxSkip) {
			st = c
			break
		}
	}
	if st == nil {
		lru := &ss.s[0]
		for i := range ss.s {
			if ss.s[i].used < lru.used {
				lru = &ss.s[i]
			}
		}
		*lru = stream{next: last + 1, ahead: last + 1, used: ss.tick}
		return 1, 0
	}
	st.used = ss.tick
	if last < st.next {
		return 1, 0 // no new chunk: neither grow nor fetch
	}
	now := time.Now()
	if st.markAt.IsZero() {
		st.markAt, st.markChunk = now, st.next
	} else if el := now.Sub(st.markAt); el >= 2*time.Duration(max(ss.rtt.Load(), int64(time.Millisecond))) {
		st.pace = float64(last+1-st.markChunk) / el.Seconds()
		st.markAt, st.markChunk = now, last+1
	}
	// Growing while the reader reads on without a gap (slow start),
	// bounded by what its pace needs.
	if first <= st.next {
		adv := last + 1 - st.next
		st.run += adv
		if st.run >= minRun {
			// Each chunk consumed adds one to the window: it doubles
			// once per window read (per round trip while the reader
			// waits), not once per read.
			st.window = min(max(st.window+adv, initialWindow), max(ss.bound(st), st.window/2))
		}
	}
	st.next = last + 1
	st.ahead = max(st.ahead, st.next)
	end := min(st.next+st.window-1, n-1)
	// Top up once a quarter of the window has been used, so GETs stay large.
	if end-st.ahead+1 < max(st.window/4, 1) {
		return 1, 0
	}
	from, to = st.ahead, end
	st.ahead = end + 1
	return from, to
}

// readahead fetches chunks [from, to] in the background at prioAhead, in
// pieces of up to maxRun each with its own GET, several in flight.
func (b *Blob) readahead(from, to int64) {
	per := maxRun / b.chunk
	for i := from; i <= to; i += per {
		j := min(i+per-1, to)
		if b.cf.firstMissing(i, j) < 0 {
			continue
		}
		if b.aheadPending.Add(1) > maxAheadPending {
			b.aheadPending.Add(-1)
			return
		}
		b.wg.Go(func() {
			defer b.aheadPending.Add(-1)
			_ = b.prefetch(b.ctx, i, j, prioAhead, false) // a reader that needs it retries as a foreground miss
		})
	}
}

// markAhead remembers that readahead brought chunk i, for the hit counter.
func (b *Blob) markAhead(i int64) {
	b.mu.Lock()
	b.aheadBits[i/64] |= 1 << (i % 64)
	b.mu.Unlock()
}

// countAheadHits counts the chunks of [first, last] that readahead brought
// and a reader now uses (each once).
func (b *Blob) countAheadHits(first, last int64) {
	var hits int64
	b.mu.Lock()
	for i := first; i <= last; i++ {
		w, m := &b.aheadBits[i/64], uint64(1)<<(i%64)
		if *w&m != 0 {
			*w &^= m
			hits++
		}
	}
	b.mu.Unlock()
	if hits > 0 {
		b.stats.aheadHits.Add(hits)
	}
}

// endsTail is how much of a blob's end FetchEnds fetches: a layer's indexes
// (ZFile jump table, LSMT index) sit there; 1 MiB holds the ZFile index of
// about 1 GiB of 4 KiB blocks.
const endsTail = 1 << 20

// FetchEnds fetches the first chunk and the last endsTail bytes of the
// blob at once, in parallel, so that opening a layer (tar header, ZFile
// header and trailer, indexes) costs about one round trip instead of one
// per structure read in turn. Errors are left to the reads that follow.
func (b *Blob) FetchEnds() {
	if b.cf == nil || b.cf.n == 0 {
		return
	}
	last := b.cf.n - 1
	tail := max(last-endsTail/b.chunk+1, 0)
	if tail <= 1 {
		_ = b.ensure(0, last)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = b.ensure(tail, last) })
	_ = b.ensure(0, 0)
	wg.Wait()
}
