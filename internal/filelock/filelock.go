// Package filelock holds advisory whole-file locks (flock(2)) on files a
// process must own alone, and names who holds a lock it cannot get.
//
// flock locks belong to an open file description, not to a process: two
// opens of one file conflict even inside one process, so a daemon adding the
// same writable layer twice is refused like a second daemon is. The lock goes
// with the descriptor: closing the file (or the process dying, kill -9
// included) releases it, so a crash never leaves a stale lock behind.
//
// The kernel does not say who holds a lock when it refuses one; /proc/locks
// does for flock locks (the pid that took it), so a refusal names the
// holder's pid and command line where /proc is readable.
package filelock

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrLocked means another open file holds a conflicting lock.
var ErrLocked = errors.New("locked by another user of the file")

// Holder is a process holding a lock on the file.
type Holder struct {
	Pid     int
	Write   bool   // an exclusive lock
	Command string // its command line, "" if unknown
}

func (h Holder) String() string {
	s := "pid " + strconv.Itoa(h.Pid)
	if h.Command != "" {
		s += " (" + h.Command + ")"
	}
	return s
}

// LockedError is returned when a lock is refused. It unwraps to ErrLocked.
type LockedError struct {
	Path      string
	Exclusive bool     // what was asked for
	Holders   []Holder // empty when /proc/locks does not say
}

func (e *LockedError) Error() string {
	var b strings.Builder
	b.WriteString(e.Path)
	b.WriteString(": ")
	switch {
	case len(e.Holders) == 0:
		b.WriteString("locked by another open of the file (holder unknown)")
	default:
		what := "open for reading by "
		for _, h := range e.Holders {
			if h.Write {
				what = "open for writing by "
			}
		}
		b.WriteString(what)
		for i, h := range e.Holders {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(h.String())
		}
	}
	return b.String()
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// Exclusive locks f for this open alone, without waiting: a writer.
func Exclusive(f *os.File) error { return lock(f, true) }

// Shared locks f against writers, without waiting: readers that need the
// file to stay unchanged while they hold it.
func Shared(f *os.File) error { return lock(f, false) }

func lock(f *os.File, exclusive bool) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	var err error
	for {
		if err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != syscall.EINTR {
			break
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return &LockedError{Path: f.Name(), Exclusive: exclusive, Holders: holders(f)}
	default:
		return fmt.Errorf("%s: locking: %w", f.Name(), err)
	}
}

// holders names the processes with a flock lock on f (other than waiters),
// from /proc/locks. Best effort: nil when /proc cannot tell.
func holders(f *os.File) []Holder {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	var out []Holder
	for _, e := range ParseProcLocks(data) {
		if e.Kind != "FLOCK" || e.Major != unix.Major(uint64(st.Dev)) || e.Minor != unix.Minor(uint64(st.Dev)) || e.Inode != st.Ino || e.Pid <= 0 {
			continue
		}
		out = append(out, Holder{Pid: e.Pid, Write: e.Write, Command: command(e.Pid)})
	}
	return out
}

// command is the command line of pid, space-separated and bounded.
func command(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(b, "\x00")
	s := strings.ReplaceAll(string(b), "\x00", " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// Entry is one granted lock of /proc/locks.
type Entry struct {
	Kind         string // FLOCK, POSIX, OFDLCK, LEASE, ...
	Write        bool
	Pid          int // -1 for OFD locks
	Major, Minor uint32
	Inode        uint64
}

// ParseProcLocks reads the granted locks of a /proc/locks text, e.g.
//
//	1: FLOCK  ADVISORY  WRITE 15975 fe:00:9981163 0 EOF
//	1: -> FLOCK  ADVISORY  WRITE 16002 fe:00:9981163 0 EOF
//
// Waiters ("->") and lines it cannot read are skipped.
func ParseProcLocks(data []byte) []Entry {
	var out []Entry
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[0], ":") || f[1] == "->" {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil {
			continue
		}
		dev := strings.Split(f[5], ":")
		if len(dev) != 3 {
			continue
		}
		maj, err1 := strconv.ParseUint(dev[0], 16, 32)
		mnr, err2 := strconv.ParseUint(dev[1], 16, 32)
		ino, err3 := strconv.ParseUint(dev[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		out = append(out, Entry{Kind: f[1], Write: f[3] == "WRITE", Pid: pid, Major: uint32(maj), Minor: uint32(mnr), Inode: ino})
	}
	return out
}
