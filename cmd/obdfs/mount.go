package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	stackFlags

	Mountpoint string   `arg:"" name:"MOUNTPOINT" help:"Directory to mount on." type:"path"`
	Stacks     []string `arg:"" optional:"" name:"NAME=STACK" help:"Serve STACK as the file MOUNTPOINT/NAME."`
}

// readyFDEnv names the pipe on which a background daemon reports
// readiness ("ok") or its start-up error to the `obdfs mount` that started it.
const readyFDEnv = "OBDFS_READY_FD"

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
	if !c.Foreground {
		return c.daemonize(mp)
	}

	o, err := c.imageOptions(blockcache.New(cacheSize))
	if err != nil {
		return err
	}
	open := func(spec string) (disk.Disk, error) {
		s, err := image.Open(spec, o)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err := server.Start(server.Config{
		Mountpoint: mp, Open: open, Cache: o.Cache, Log: slog.Default(),
		Mount: fusefs.MountOptions{MaxIO: int(maxIO), ReadAheadKB: c.ReadaheadKB, MaxBackground: c.MaxBackground, Debug: c.DebugFUSE},
	}, stacks)
	ready := readyPipe()
	if err != nil {
		if ready != nil {
			fmt.Fprintf(ready, "%v\n", err)
			ready.Close()
		}
		return err
	}
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sig)
	for {
		select {
		case <-s.Done():
			return s.Wait()
		case sg := <-sig:
			slog.Info("signal: stopping", "signal", sg)
			if err := s.Shutdown(); err != nil {
				slog.Error("cannot stop; still serving", "err", err)
			}
		}
	}
}

func readyPipe() *os.File {
	v := os.Getenv(readyFDEnv)
	if v == "" {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), "ready")
}

// daemonize re-executes obdfs with --foreground in a new session, its output
// going to the log file, and waits for it to report the mount ready.
func (c *mountCmd) daemonize(mp string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := c.LogFile
	if logPath == "" {
		logPath = server.LogPath(mp)
	}
	if err := os.MkdirAll(server.RunDir(), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(self, append(os.Args[1:], "--foreground")...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting daemon: %w", err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	line, _ := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		cmd.Process.Release()
		return nil
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
	if line == "" {
		line = "daemon exited before the mount was ready; see " + logPath
	}
	return errors.New(line)
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
	resp, err := server.Call(server.SocketPath(mp), server.Request{Op: "shutdown"})
	switch {
	case err == nil:
		return waitExit(resp.Pid, timeout)
	case errors.Is(err, server.ErrNoDaemon):
		// A killed daemon leaves a dead mount (ENOTCONN): remove it.
		flags := 0
		if c.Lazy {
			flags = unix.MNT_DETACH
		}
		if uerr := unix.Unmount(mp, flags); uerr != nil {
			return fmt.Errorf("%v; umount %s: %w", err, mp, uerr)
		}
		os.Remove(server.SocketPath(mp))
		return nil
	case c.Lazy:
		slog.Warn("daemon refused to stop; detaching lazily: it stops when the last user closes", "err", err)
		if resp != nil && resp.Pid == 0 {
			return err
		}
		return unix.Unmount(mp, unix.MNT_DETACH)
	default:
		return err
	}
}

func waitExit(pid int, timeout time.Duration) error {
	if pid <= 0 || pid == os.Getpid() {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) || zombie(pid) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("daemon %d still running %v after unmount", pid, timeout)
}

// zombie reports a process that has exited but was not reaped yet.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}
