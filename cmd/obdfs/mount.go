package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/fusefs"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/server"
)

func init() { register(&mountCmds{}) }

type mountCmds struct {
	Mount  mountCmd  `cmd:"" help:"Serve STACKs as raw disk files MOUNTPOINT/NAME over FUSE (returns once mounted; the daemon keeps running)."`
	Umount umountCmd `cmd:"" help:"Flush and close every stack, unmount, and stop the daemon of MOUNTPOINT."`
}

type mountCmd struct {
	Foreground    bool   `short:"f" help:"Stay attached and log to standard error (default: detach a daemon once the mount is ready)."`
	CacheSize     string `default:"256MiB" placeholder:"SIZE" help:"Decoded-block cache shared by all stacks (e.g. 64MiB, 1GiB)."`
	MaxIO         string `default:"1MiB" placeholder:"SIZE" help:"Largest FUSE read/write request (at most 1MiB, capped by fs.fuse.max_pages_limit)."`
	ReadaheadKB   int    `name:"readahead-kb" default:"1024" placeholder:"KB" help:"Kernel readahead of the mount, in KiB (-1: leave the kernel default)."`
	MaxBackground int    `default:"64" help:"Asynchronous FUSE requests the kernel keeps in flight (readahead, async direct I/O)."`
	LogFile       string `placeholder:"FILE" help:"Daemon log (default: the mountpoint's .log beside its control socket)."`
	DebugFUSE     bool   `name:"debug-fuse" help:"Log every FUSE request."`
	NonEmpty      bool   `name:"nonempty" help:"Mount over a directory that has files (they are hidden while mounted); refused otherwise."`
	AllowOther    bool   `help:"Let other users open the files, as their owner and mode allow (default: only the user who mounted; implied by --uid/--gid)."`
	permFlags
	FuseURing string `name:"fuse-uring" enum:"auto,on,off" default:"auto" help:"FUSE over io_uring (kernel 6.14+, module parameter fuse.enable_uring=Y, root): auto uses it when offered, on fails when not, off reads /dev/fuse."`
	stackFlags
	metricsFlag

	Mountpoint string   `arg:"" name:"MOUNTPOINT" help:"Directory to mount on." type:"path"`
	Stacks     []string `arg:"" optional:"" name:"NAME=STACK" help:"Serve STACK as the file MOUNTPOINT/NAME."`
}

// parseSize reads 123, 64K, 64KiB, 256M, 1G, 1GiB (binary units).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func (c *mountCmd) Run() error {
	stacks, err := parseStacks(c.Stacks)
	if err != nil {
		return err
	}
	cacheSize, err := parseSize(c.CacheSize)
	if err != nil {
		return fmt.Errorf("--cache-size: %w", err)
	}
	maxIO, err := parseSize(c.MaxIO)
	if err != nil || maxIO < 4096 || maxIO > 1<<20 {
		return fmt.Errorf("--max-io %q: want 4KiB to 1MiB", c.MaxIO)
	}
	mp, err := server.CleanMountpoint(c.Mountpoint)
	if err != nil {
		return err
	}
	svc, err := c.settings()
	if err != nil {
		return err
	}
	if !c.Foreground {
		logPath := c.LogFile
		if logPath == "" && svc != nil {
			logPath = svc.LogPath // overlaybd's logPath
		}
		if logPath == "" {
			logPath = server.LogPath(mp)
		}
		return server.Detach(append(os.Args[1:], "--foreground"), logPath, logPath == server.LogPath(mp))
	}

	o, err := c.imageOptions(blockcache.New(cacheSize))
	if err != nil {
		return err
	}
	o.Writable = true // a config's upper is served writable, under its lock
	open := func(spec string, lazy server.LazyOptions) (disk.Disk, error) {
		so := o // a stack's lazy-read flags change only its own options
		if err := applyLazy(&so.Remote, lazy); err != nil {
			return nil, err
		}
		s, err := image.Open(spec, so)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	m, stopMetrics, err := c.startMetrics("fuse", o.Cache, svc)
	if err != nil {
		server.NotifyReady(err)
		return err
	}
	defer stopMetrics()
	perm, allowOther, err := c.permFlags.mountPerm()
	if err != nil {
		server.NotifyReady(err)
		return err
	}
	cfg := server.Config{
		Mountpoint: mp, Open: open, Cache: o.Cache, Log: slog.Default(), Perm: perm, NonEmpty: c.NonEmpty,
		Mount: fusefs.MountOptions{MaxIO: int(maxIO), ReadAheadKB: c.ReadaheadKB, MaxBackground: c.MaxBackground, Debug: c.DebugFUSE, AllowOther: c.AllowOther || allowOther, URing: c.FuseURing},
	}
	if m != nil {
		cfg.Observer = m
	}
	s, err := server.Start(cfg, stacks)
	server.NotifyReady(err)
	if err != nil {
		return err
	}
	return s.ServeUntilSignal()
}

// permFlags set the owner and mode of served files (mount: every stack's
// default; stack add: that stack's).
type permFlags struct {
	UID  int    `name:"uid" default:"-1" placeholder:"UID" help:"Owner of the files (default: the user who mounted)."`
	GID  int    `name:"gid" default:"-1" placeholder:"GID" help:"Group of the files (default: the user's group)."`
	Mode string `name:"mode" placeholder:"OCTAL" help:"Permission bits of the files (default 0644, 0660 with --uid or --gid; read-only stacks never get write bits)."`
}

// override is what the flags change; nil fields were not given.
func (f permFlags) override() (server.PermOverride, error) {
	var o server.PermOverride
	for _, x := range []struct {
		v    int
		dst  **uint32
		name string
	}{{f.UID, &o.Uid, "--uid"}, {f.GID, &o.Gid, "--gid"}} {
		if x.v < -1 || x.v > 1<<32-2 {
			return o, fmt.Errorf("%s %d: out of range", x.name, x.v)
		}
		if x.v >= 0 {
			v := uint32(x.v)
			*x.dst = &v
		}
	}
	if f.Mode != "" {
		m, err := strconv.ParseUint(f.Mode, 8, 32)
		if err != nil || m > 0o7777 {
			return o, fmt.Errorf("--mode %q: want octal permission bits such as 0640", f.Mode)
		}
		v := uint32(m)
		o.Mode = &v
	}
	return o, nil
}

// mountPerm is the mount's default owner and mode, and whether other users
// must be let in (--uid/--gid name someone who is not the mounter).
func (f permFlags) mountPerm() (fusefs.Perm, bool, error) {
	o, err := f.override()
	if err != nil {
		return fusefs.Perm{}, false, err
	}
	p := fusefs.DefaultPerm()
	other := o.Uid != nil || o.Gid != nil
	if other {
		p.Mode = 0o660
	}
	if o.Uid != nil {
		p.Uid = *o.Uid
	}
	if o.Gid != nil {
		p.Gid = *o.Gid
	}
	if o.Mode != nil {
		p.Mode = *o.Mode
	}
	return p, other, nil
}

type umountCmd struct {
	Lazy       bool   `short:"l" help:"If the mount is busy or its daemon is dead, detach it lazily (umount -l)."`
	Timeout    string `default:"30s" help:"How long to wait for the daemon to exit."`
	Mountpoint string `arg:"" name:"MOUNTPOINT" type:"path"`
}

func (c *umountCmd) Run() error {
	mp, err := server.CleanMountpoint(c.Mountpoint)
	if err != nil {
		return err
	}
	timeout, err := time.ParseDuration(c.Timeout)
	if err != nil {
		return fmt.Errorf("--timeout: %w", err)
	}
	return server.Stop(mp, c.Lazy, timeout)
}
