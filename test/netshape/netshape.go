// Package netshape is a shaping TCP proxy for tests and benchmarks: it puts a
// network with a round-trip time and a bandwidth cap between a client and a
// server on loopback, where the host kernel has no netem.
//
// Each direction of each connection is modelled as a link: bytes are
// serialised at the configured rate (shared by all connections, or per
// connection), then delayed by the one-way delay before they are written to
// the other side. Reads from the sender stop when a direction has more than
// a bounded amount in flight, so TCP back-pressure reaches the sender as on a
// real link. The proxy listens on 127.0.0.1 only, forwards only to loopback
// targets and ends itself after a bounded lifetime.
package netshape

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes the emulated network.
type Config struct {
	// Target is the loopback address connections are forwarded to.
	Target string
	// Up and Down are the one-way delays client->server and server->client
	// (an RTT of 50 ms is Up = Down = 25 ms).
	Up, Down time.Duration
	// Rate caps each direction in bytes per second (0: no cap).
	Rate int64
	// Shared makes every connection share one link per direction (one
	// bottleneck, as one NIC); otherwise each connection has its own.
	Shared bool
	// Lifetime closes the proxy and its connections after this long
	// (default 1 hour): a forgotten proxy does not outlive its test for long.
	Lifetime time.Duration
}

// WithRTT returns c with Up and Down set to half of rtt each.
func (c Config) WithRTT(rtt time.Duration) Config {
	c.Up, c.Down = rtt/2, rtt-rtt/2
	return c
}

// Stats are the proxy's counters.
type Stats struct {
	Conns     int64 // connections accepted
	UpBytes   int64 // client -> server bytes delivered
	DownBytes int64 // server -> client bytes delivered
}

// Proxy is a running shaping proxy.
type Proxy struct {
	cfg Config
	ln  net.Listener

	upLink, downLink *link // the shared links (Shared), else nil

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	timer  *time.Timer

	nconns, up, down atomic.Int64
}

// maxInFlight bounds the bytes queued in one direction of a connection
// (enough for 1 GB/s at 100 ms one-way).
const maxInFlight = 128 << 20

const pieceSize = 64 << 10

// Start listens on 127.0.0.1:0 and forwards to cfg.Target.
func Start(cfg Config) (*Proxy, error) {
	host, _, err := net.SplitHostPort(cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("netshape: target %q: %w", cfg.Target, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("netshape: target %q is not a loopback address", cfg.Target)
	}
	if cfg.Up < 0 || cfg.Down < 0 || cfg.Rate < 0 {
		return nil, fmt.Errorf("netshape: negative delay or rate")
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = time.Hour
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netshape: %w", err)
	}
	p := &Proxy{cfg: cfg, ln: ln, conns: map[net.Conn]struct{}{}}
	if cfg.Shared {
		p.upLink, p.downLink = &link{rate: cfg.Rate}, &link{rate: cfg.Rate}
	}
	p.timer = time.AfterFunc(cfg.Lifetime, func() { p.Close() })
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's 127.0.0.1:PORT.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{Conns: p.nconns.Load(), UpBytes: p.up.Load(), DownBytes: p.down.Load()}
}

// Close stops accepting, closes every connection and waits for the proxy's
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	p.timer.Stop()
	err := p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.nconns.Add(1)
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.cfg.Target)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	up, down := p.upLink, p.downLink
	if up == nil {
		up, down = &link{rate: p.cfg.Rate}, &link{rate: p.cfg.Rate}
	}
	var wg sync.WaitGroup
	wg.Go(func() { pipe(server, client, up, p.cfg.Up, &p.up) })
	wg.Go(func() { pipe(client, server, down, p.cfg.Down, &p.down) })
	wg.Wait()
}

// link is one direction's bottleneck: the time its last queued byte leaves.
type link struct {
	rate int64
	mu   sync.Mutex
	busy time.Time
}

// send books n bytes arriving at now and returns when they have been
// serialised onto the link.
func (l *link) send(now time.Time, n int) time.Time {
	if l.rate == 0 {
		return now
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	start := l.busy
	if start.Before(now) {
		start = now
	}
	l.busy = start.Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
	return l.busy
}

type piece struct {
	b  *[]byte
	n  int
	at time.Time // when it may be written to the receiver
}

var pieces = sync.Pool{New: func() any { b := make([]byte, pieceSize); return &b }}

// pipe copies src to dst through the link with the one-way delay, then
// half-closes dst.
func pipe(dst, src net.Conn, l *link, delay time.Duration, count *atomic.Int64) {
	q := make(chan piece, maxInFlight/pieceSize)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(q)
		for {
			bp := pieces.Get().(*[]byte)
			n, err := src.Read(*bp)
			if n > 0 {
				q <- piece{b: bp, n: n, at: l.send(time.Now(), n).Add(delay)}
			} else {
				pieces.Put(bp)
			}
			if err != nil {
				return
			}
		}
	})
	failed := false
	for pc := range q {
		if !failed {
			if d := time.Until(pc.at); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write((*pc.b)[:pc.n]); err != nil {
				failed = true
				src.Close() // stop the reader: nobody takes its bytes
			} else {
				count.Add(int64(pc.n))
			}
		}
		pieces.Put(pc.b)
	}
	wg.Wait()
	if tc, ok := dst.(*net.TCPConn); ok && !failed {
		if err := tc.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			dst.Close()
		}
	} else {
		dst.Close()
	}
}

var _ io.Closer = (*Proxy)(nil)
