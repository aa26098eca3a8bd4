// Command netshape runs the shaping TCP proxy of package netshape for bench
// scripts: it prints its 127.0.0.1:PORT on stdout, then forwards until
// SIGTERM/SIGINT or the end of its lifetime.
//
//	netshape -target 127.0.0.1:5000 -rtt 50ms -rate 50000000 [-shared] [-lifetime 1h]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/obdfs/obdfs/test/netshape"
)

func main() {
	target := flag.String("target", "", "loopback HOST:PORT to forward to")
	rtt := flag.Duration("rtt", 0, "round-trip time added (half each way)")
	rate := flag.Int64("rate", 0, "bandwidth cap per direction, bytes/s (0: none)")
	shared := flag.Bool("shared", true, "all connections share one link per direction")
	lifetime := flag.Duration("lifetime", time.Hour, "exit after this long")
	flag.Parse()
	p, err := netshape.Start(netshape.Config{Target: *target, Rate: *rate, Shared: *shared, Lifetime: *lifetime}.WithRTT(*rtt))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(p.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-time.After(*lifetime):
	}
	p.Close()
	st := p.Stats()
	fmt.Fprintf(os.Stderr, "netshape: %d connections, %d bytes up, %d bytes down\n", st.Conns, st.UpBytes, st.DownBytes)
}
