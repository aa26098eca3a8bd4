package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readyFDEnv names the pipe on which a detached daemon reports readiness
// ("ok") or its start-up error to the process that started it (Detach).
const readyFDEnv = "OBDFS_READY_FD"

// logEnv names the log file a detached daemon removes when it stops
// cleanly (Detach with removeLog).
const logEnv = "OBDFS_REMOVE_LOG"

// Detach runs the current program again with args in a new session, its
// output appended to logPath, and waits until the child reports that its
// mount is ready (NotifyReady) or fails; the child's start-up error is
// returned. The run directory is prepared (PrepareRunDir) and the log opened
// 0600 without following a symlink. With removeLog (the default log path),
// a log this call created is removed if start-up fails (the error is
// returned here), and the daemon removes it when it stops cleanly.
func Detach(args []string, logPath string, removeLog bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := PrepareRunDir(RunDir()); err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_APPEND | unix.O_NOFOLLOW
	created := true
	logf, err := os.OpenFile(logPath, flags|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		created = false
		logf, err = os.OpenFile(logPath, flags, 0)
	}
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	env := os.Environ()
	if removeLog {
		env = append(env, logEnv+"="+logPath)
	}
	startErr := func(err error) error {
		if removeLog && created {
			os.Remove(logPath)
		}
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.Env = append(env, readyFDEnv+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return startErr(fmt.Errorf("starting daemon: %w", err))
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
		return fmt.Errorf("daemon exited before the mount was ready; see %s", logPath)
	}
	return startErr(errors.New(line))
}

// NotifyReady tells the process that started this one with Detach how
// start-up ended: nil means the mount is ready. Without such a parent it
// does nothing.
func NotifyReady(startErr error) {
	v := os.Getenv(readyFDEnv)
	if v == "" {
		return
	}
	os.Unsetenv(readyFDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	if startErr != nil {
		fmt.Fprintf(f, "%v\n", startErr)
	} else {
		fmt.Fprintln(f, "ok")
	}
	f.Close()
}

// ServeUntilSignal serves until the server stops (unmounted from outside
// or by `umount` through the socket), shutting it down on SIGTERM or
// SIGINT. A shutdown that fails (the mount is busy) keeps serving.
func (s *Server) ServeUntilSignal() error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sig)
	for {
		select {
		case <-s.Done():
			err := s.Wait()
			if p := os.Getenv(logEnv); p != "" && err == nil {
				os.Remove(p) // a clean stop: nothing in it is needed
			}
			return err
		case sg := <-sig:
			s.log.Info("signal: stopping", "signal", sg)
			if err := s.Shutdown(); err != nil {
				s.log.Error("cannot stop; still serving", "err", err)
			}
		}
	}
}

// Stop asks the daemon of mountpoint mp to flush, unmount and exit, and
// waits up to timeout for its process to end. A mount whose daemon is dead
// is unmounted here. With lazy, a busy mount or one whose daemon refuses
// is detached lazily (umount -l).
func Stop(mp string, lazy bool, timeout time.Duration) error {
	resp, err := Call(SocketPath(mp), Request{Op: "shutdown"})
	switch {
	case err == nil:
		return waitExit(resp.Pid, timeout)
	case errors.Is(err, ErrNoDaemon):
		// A killed daemon leaves a dead mount (ENOTCONN): remove it.
		flags := 0
		if lazy {
			flags = unix.MNT_DETACH
		}
		if uerr := unix.Unmount(mp, flags); uerr != nil {
			return fmt.Errorf("%v; umount %s: %w", err, mp, uerr)
		}
		os.Remove(SocketPath(mp))
		return nil
	case lazy:
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
