package main

import (
	"log/slog"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/metrics"
	"github.com/obdfs/obdfs/overlaybdconf"
)

// metricsFlag is --metrics of the serving commands.
type metricsFlag struct {
	Metrics string `placeholder:"ADDR" help:"Serve Prometheus metrics at ADDR (HOST:PORT, or unix:PATH / an absolute path for a unix socket) under /metrics."`
}

// startMetrics returns nil, a no-op stop and no error without --metrics.
// Without it, overlaybd's exporterConfig (svc, may be nil) may ask for them.
func (f metricsFlag) startMetrics(frontend string, cache *blockcache.Cache, svc *overlaybdconf.Settings) (*metrics.Metrics, func(), error) {
	addr := f.Metrics
	if addr == "" && svc != nil {
		addr = svc.Metrics
	}
	if addr == "" {
		return nil, func() {}, nil
	}
	ln, err := metrics.Listen(addr)
	if err != nil {
		return nil, nil, err
	}
	m := metrics.New(frontend, cache)
	srv := m.Serve(ln)
	slog.Info("metrics", "addr", srv.Addr)
	return m, func() {
		if err := srv.Close(); err != nil {
			slog.Warn("metrics server", "err", err)
		}
	}, nil
}
