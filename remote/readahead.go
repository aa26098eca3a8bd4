package remote

import "sync"

// Readahead for a lone reader on a high-RTT link: without it a sequential
// reader pays one round trip per chunk. Each Blob tracks a few sequential
// streams (a ZFile layer is read at its index and at its data, several files
// at once); a read that continues a stream grows the stream's window, from
// one chunk (RefillSize) doubling up to Options.Readahead, and the chunks of
// the window ahead of the reader are fetched in the background at prioAhead,
// in GETs of up to maxRun, several in flight. A read that continues no
// stream takes over the least recently used one with an empty window, so
// random access fetches nothing ahead.

// numStreams is how many sequential streams a Blob follows at once.
const numStreams = 4

// maxAheadPending bounds the readahead GETs queued or in flight per Blob.
const maxAheadPending = 16

type stream struct {
	next   int64  // chunk after the furthest read so far
	ahead  int64  // first chunk readahead has not asked for
	window int64  // chunks kept ahead of next; 0 until sequential
	used   uint64 // last use, for LRU; 0 = empty slot
}

type streams struct {
	mu   sync.Mutex
	max  int64 // window bound in chunks; 0 disables readahead
	tick uint64
	s    [numStreams]stream
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
		if c.used != 0 && first >= c.next-2 && first <= c.next+max(c.window/2, 1) {
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
	st.window = min(max(2*st.window, 1), ss.max)
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
