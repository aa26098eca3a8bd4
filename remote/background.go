package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Background download (overlaybd's `download` cache): after Delay, every
// registry blob a stack has open is fetched to its end into the persistent
// cache, bottom to top in GETs of up to maxRun at prioBackground, paced to
// MaxBytesPerSec for the whole process. What readers or an earlier run
// already fetched is skipped, so a download interrupted by a crash resumes
// from the chunks the cache map recorded. When the last chunk arrives the
// cache hashes the blob against its digest (cacheFile.verify), as for a
// pull; on a mismatch every chunk is dropped, never mixed with others.
// A blob is not started, or is stopped, when the rest of it would not fit
// under Options.CacheMax beside what is already cached.

// BackgroundOptions configure the background download.
type BackgroundOptions struct {
	// Enable turns it on (default off: a lazily served image fetches only
	// what is read).
	Enable bool
	// Delay is the wait after a blob is opened before its download starts,
	// so the start-up reads have the link to themselves.
	Delay time.Duration
	// MaxBytesPerSec bounds the download rate of the process (0: no bound
	// beyond the two GETs in flight per repository).
	MaxBytesPerSec int64
}

// Background states, as Stats.Background reports them.
const (
	bgOff      = ""
	bgWaiting  = "waiting"
	bgRunning  = "running"
	bgDone     = "done" // complete and verified
	bgFull     = "stopped: cache full"
	bgFailed   = "failed"   // see the log
	bgCanceled = "canceled" // the blob was closed first
)

// pacer spreads bytes over time at a rate shared by its users.
type pacer struct {
	rate int64 // bytes per second
	mu   sync.Mutex
	next time.Time
}

var pacers sync.Map // int64 rate -> *pacer

func pacerFor(rate int64) *pacer {
	p, _ := pacers.LoadOrStore(rate, &pacer{rate: rate})
	return p.(*pacer)
}

// wait books n bytes and sleeps until their turn.
func (p *pacer) wait(ctx context.Context, n int64) error {
	p.mu.Lock()
	now := time.Now()
	start := p.next
	if start.Before(now) {
		start = now
	}
	p.next = start.Add(time.Duration(float64(n) / float64(p.rate) * float64(time.Second)))
	p.mu.Unlock()
	d := time.Until(start)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// background runs the download of b; the caller started it with b.wg.
func (b *Blob) background(o BackgroundOptions) {
	if o.Delay > 0 {
		t := time.NewTimer(o.Delay)
		select {
		case <-t.C:
		case <-b.ctx.Done():
			t.Stop()
			b.setBackground(bgCanceled)
			return
		}
	}
	b.setBackground(bgRunning)
	err := b.download(o)
	switch {
	case err == nil:
		b.setBackground(bgDone)
	case errors.Is(err, errCacheFull):
		b.setBackground(bgFull)
		slog.Warn("background download stopped: the rest of the blob does not fit in the cache bound", "blob", b.name, "err", err)
	case b.ctx.Err() != nil:
		b.setBackground(bgCanceled)
	default:
		b.setBackground(bgFailed)
		slog.Error("background download failed", "blob", b.name, "err", err)
	}
}

var errCacheFull = errors.New("cache bound reached")

func (b *Blob) download(o BackgroundOptions) error {
	var pace *pacer
	if o.MaxBytesPerSec > 0 {
		pace = pacerFor(o.MaxBytesPerSec)
	}
	per := maxRun / b.chunk
	mism := b.cf.mismatches.Load()
	// A chunk invalidated by a reader (a ZFile CRC failure) while we
	// passed it is fetched again by another round.
	for round := 0; round < 3 && b.cf.firstMissing(0, b.cf.n-1) >= 0; round++ {
		for i := int64(0); i < b.cf.n; i += per {
			j := min(i+per-1, b.cf.n-1)
			if b.cf.firstMissing(i, j) < 0 {
				continue
			}
			if err := b.roomFor(); err != nil {
				return err
			}
			if pace != nil {
				if err := pace.wait(b.ctx, (j-i+1)*b.chunk); err != nil {
					return err
				}
			}
			if err := b.prefetch(b.ctx, i, j, prioBackground, true); err != nil {
				return err
			}
		}
	}
	// The fetch that completed the blob started its check; verify waits
	// for it (or runs it, for a blob completed before a crash).
	err := b.cf.verify()
	if b.cf.mismatches.Load() > mism && !errors.Is(err, ErrDigest) {
		err = fmt.Errorf("the downloaded blob did not match its digest and was dropped: %w", ErrDigest)
	}
	return err
}

// roomFor reports errCacheFull when the rest of the blob would take the
// cache past its bound.
func (b *Blob) roomFor() error {
	c := b.cf.c
	c.mu.Lock()
	limit := c.max
	c.mu.Unlock()
	rest := b.size - b.cf.presentBytes()
	if used := c.usage.Load(); used+rest > limit {
		return fmt.Errorf("%w: %d bytes cached, %d more needed, bound %d", errCacheFull, used, rest, limit)
	}
	return nil
}

func (b *Blob) setBackground(s string) {
	b.bgState.Store(&s)
}

// backgroundState is the download's state ("" when off).
func (b *Blob) backgroundState() string {
	if p := b.bgState.Load(); p != nil {
		return *p
	}
	return bgOff
}
