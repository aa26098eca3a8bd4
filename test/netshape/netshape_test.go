package netshape

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer answers every connection by copying it back, half-closing at EOF.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	return ln.Addr().String()
}

func start(t *testing.T, c Config) *Proxy {
	t.Helper()
	p, err := Start(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// roundTrip sends data through the proxy to the echo server and returns what
// came back (after half-closing) and how long it took.
func roundTrip(t *testing.T, addr string, data []byte) ([]byte, time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	var werr error
	var wg sync.WaitGroup
	wg.Go(func() {
		_, werr = c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	})
	got, err := io.ReadAll(c)
	wg.Wait()
	if err != nil || werr != nil {
		t.Fatalf("read %v, write %v", err, werr)
	}
	return got, time.Since(t0)
}

func TestShaping(t *testing.T) {
	echo := echoServer(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	for _, tc := range []struct {
		name     string
		cfg      Config
		size     int
		atLeast  time.Duration // physics: no byte can come back sooner
		parallel int
	}{
		{"plain", Config{}, 1 << 20, 0, 1},
		{"rtt 60ms", Config{}.WithRTT(60 * time.Millisecond), 100, 60 * time.Millisecond, 1},
		{"asymmetric", Config{Up: 50 * time.Millisecond, Down: 10 * time.Millisecond}, 100, 60 * time.Millisecond, 1},
		// 1 MiB at 8 MiB/s: 125 ms each way is serialised, pipelined: >= 125 ms.
		{"rate", Config{Rate: 8 << 20}, 1 << 20, 125 * time.Millisecond, 1},
		// Two connections share one 8 MiB/s link: 2 MiB take >= 250 ms.
		{"shared rate", Config{Rate: 8 << 20, Shared: true}, 1 << 20, 250 * time.Millisecond, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.Target = echo
			p := start(t, c)
			t0 := time.Now()
			var wg sync.WaitGroup
			for range tc.parallel {
				wg.Go(func() {
					got, _ := roundTrip(t, p.Addr(), data[:tc.size])
					if !bytes.Equal(got, data[:tc.size]) {
						t.Errorf("echo through the proxy: %d bytes back, want the %d sent", len(got), tc.size)
					}
				})
			}
			wg.Wait()
			if el := time.Since(t0); el < tc.atLeast {
				t.Errorf("took %v, the shaping allows no less than %v", el, tc.atLeast)
			}
			st := p.Stats()
			if want := int64(tc.size * tc.parallel); st.UpBytes != want || st.DownBytes != want || st.Conns != int64(tc.parallel) {
				t.Errorf("stats %+v, want %d bytes each way over %d connections", st, want, tc.parallel)
			}
		})
	}
}

func TestPerConnectionRate(t *testing.T) {
	// Per-connection links: two connections at 8 MiB/s each move 1 MiB each
	// in parallel; the shared case above cannot be faster than 250 ms, this
	// one is only bounded below by one connection's 125 ms.
	p := start(t, Config{Target: echoServer(t), Rate: 8 << 20})
	if p.upLink != nil {
		t.Fatal("per-connection proxy has a shared link")
	}
	got, el := roundTrip(t, p.Addr(), make([]byte, 1<<20))
	if len(got) != 1<<20 || el < 125*time.Millisecond {
		t.Fatalf("%d bytes in %v", len(got), el)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, target := range []string{"192.0.2.1:80", "example.invalid:80", "nohost"} {
		if p, err := Start(Config{Target: target}); err == nil {
			p.Close()
			t.Errorf("Start(%q) succeeded", target)
		}
	}
	if _, err := Start(Config{Target: "127.0.0.1:1", Rate: -1}); err == nil {
		t.Error("negative rate accepted")
	}
}

func TestLifetime(t *testing.T) {
	p := start(t, Config{Target: echoServer(t), Lifetime: 200 * time.Millisecond})
	// The idle connection is closed when the lifetime ends, and the
	// listener with it.
	if err := readOne(t, p.Addr()); err == nil || isTimeout(err) {
		t.Fatalf("read on an idle connection: %v, want it closed by the proxy", err)
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatal("proxy still accepts after its lifetime")
	}
}

func TestServerGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := start(t, Config{Target: addr})
	if err := readOne(t, p.Addr()); err == nil || isTimeout(err) {
		t.Fatalf("read through the proxy to a dead server: %v, want the connection closed", err)
	}
}

// readOne dials addr and reads one byte, waiting at most 10 s.
func readOne(t *testing.T, addr string) error {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
