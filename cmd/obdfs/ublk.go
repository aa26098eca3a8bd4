package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/ublk"
)

func init() { register(&ublkCmds{}) }

type ublkCmds struct {
	Ublk struct {
		Attach ublkAttachCmd `cmd:"" help:"Serve a STACK as a ublk block device: prints /dev/ublkbN once it is live, then serves until 'obdfs ublk detach N' or SIGTERM/SIGINT."`
		Detach ublkDetachCmd `cmd:"" help:"Stop and delete ublk device N (its server exits)."`
		Ls     ublkLsCmd     `cmd:"" help:"List ublk devices."`
	} `cmd:"" help:"ublk block devices (/dev/ublkbN) served from STACKs, without FUSE or loop (Linux 6.0+, ublk_drv)."`
}

type ublkAttachCmd struct {
	Queues     int    `help:"Hardware queues (default: the CPU count, at most 8)." placeholder:"N"`
	Depth      int    `default:"128" help:"Requests in flight per queue (1..4096)." placeholder:"D"`
	ID         int    `name:"id" default:"-1" help:"Device number N for /dev/ublkbN (default: the kernel picks)." placeholder:"N"`
	Recover    int    `default:"-1" placeholder:"N" help:"Take over device N whose server died (the device keeps its I/O queued meanwhile)."`
	MaxIO      string `name:"max-io" default:"512KiB" placeholder:"SIZE" help:"Largest request."`
	ReadOnly   bool   `name:"read-only" help:"Serve read-only even if the stack has a writable upper."`
	NoUserCopy bool   `name:"no-user-copy" help:"Move data through buffer addresses even where the kernel offers USER_COPY."`
	NoRecovery bool   `name:"no-recovery" help:"Create the device without user recovery: it disappears when the server dies."`
	CacheSize  string `default:"256MiB" placeholder:"SIZE" help:"Decoded-block cache."`
	stackFlags
	metricsFlag
	Stack string `arg:"" name:"STACK" help:"Image config (*.json), layer files (comma-separated, bottom first), docker://REF or oci:DIR[:TAG]."`
}

func (c *ublkAttachCmd) Run() error {
	cacheSize, err := parseSize(c.CacheSize)
	if err != nil {
		return fmt.Errorf("--cache-size: %w", err)
	}
	maxIO, err := parseSize(c.MaxIO)
	if err != nil {
		return fmt.Errorf("--max-io: %w", err)
	}
	// Catch signals before the device exists: one arriving while it is being
	// created is handled once Start returns, so the device is torn down
	// whole rather than left half-made.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	o, err := c.imageOptions(blockcache.New(cacheSize))
	if err != nil {
		return err
	}
	// --ro opens a config's upper read-only, leaving it to its writer.
	o.Writable = !c.ReadOnly
	s, err := image.Open(c.Stack, o)
	if err != nil {
		return err
	}
	var d disk.Disk = s
	if c.ReadOnly {
		d = disk.ReadOnlyView(s)
	}
	svc, err := c.settings()
	if err != nil {
		s.Close()
		return err
	}
	m, stopMetrics, err := c.startMetrics("ublk", o.Cache, svc)
	if err != nil {
		s.Close()
		return err
	}
	defer stopMetrics()
	if m != nil {
		d = m.Wrap(c.Stack, d)
	}
	opts := ublk.Options{Queues: c.Queues, Depth: c.Depth, MaxIO: int(maxIO),
		NoUserCopy: c.NoUserCopy, NoRecovery: c.NoRecovery, Logger: slog.Default()}
	if c.ID >= 0 {
		opts.ID = &c.ID
	}
	var dev *ublk.Device
	if c.Recover >= 0 {
		dev, err = ublk.Recover(c.Recover, d, opts)
	} else {
		dev, err = ublk.Start(d, opts)
	}
	if err != nil {
		s.Close()
		return err
	}
	fmt.Println(dev.BlockPath())
	slog.Debug("ublk: serving", "device", dev.BlockPath(), "stack", c.Stack, "read_only", d.ReadOnly(), "user_copy", dev.UserCopy())
	select {
	case sig := <-sigs:
		slog.Info("ublk: stopping", "device", dev.BlockPath(), "signal", sig)
	case <-dev.Done():
		slog.Info("ublk: device stopped", "device", dev.BlockPath())
	}
	closeErr := dev.Close()
	if err := s.Flush(); err != nil && closeErr == nil {
		closeErr = err
	}
	if err := s.Close(); err != nil && closeErr == nil {
		closeErr = err
	}
	return closeErr
}

type ublkDetachCmd struct {
	Timeout time.Duration `default:"30s" help:"How long to wait for the server to delete the device before deleting it here."`
	ID      int           `arg:"" name:"N" help:"Device number (of /dev/ublkbN)."`
}

func (c *ublkDetachCmd) Run() error { return ublk.Detach(c.ID, c.Timeout) }

type ublkLsCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

func (c *ublkLsCmd) Run() error {
	devs, err := ublk.List()
	if err != nil {
		return err
	}
	if c.JSON {
		if devs == nil {
			devs = []ublk.Info{}
		}
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		return e.Encode(devs)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATE\tSIZE\tQUEUES\tDEPTH\tMAX_IO\tPID\tFLAGS")
	for _, d := range devs {
		fmt.Fprintf(tw, "/dev/ublkb%d\t%s\t%d\t%d\t%d\t%d\t%d\t%#x\n", d.ID, d.State, d.Size, d.Queues, d.Depth, d.MaxIO, d.PID, d.Flags)
	}
	return tw.Flush()
}
