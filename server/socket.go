package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// RunDir is the directory of control sockets and daemon logs:
// $OBDFS_RUN_DIR, else /run/obdfs for root, else $XDG_RUNTIME_DIR/obdfs,
// else /tmp/obdfs-UID. The last is a predictable name in a directory
// everyone can write, so it is only used after PrepareRunDir has checked
// that this user made it and nobody else can write to it.
func RunDir() string {
	if d := os.Getenv("OBDFS_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/obdfs"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "obdfs")
	}
	return fmt.Sprintf("/tmp/obdfs-%d", os.Geteuid())
}

// PrepareRunDir creates dir with mode 0700 if it does not exist, and checks
// that it (new or old) is a real directory, not a symlink, owned by this
// user and writable by nobody else. Another user who created the directory
// first could otherwise plant a symlink where the daemon appends its log,
// or own the socket path.
func PrepareRunDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("run directory: %w", err)
		}
		// A missing parent ($OBDFS_RUN_DIR/a/b): made like MkdirAll.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("run directory: %w", err)
		}
	}
	return checkRunDir(dir)
}

// checkRunDir refuses a run directory another user controls.
func checkRunDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("run directory %s: %w", dir, err)
	}
	uid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("run directory %s is not a directory (a symlink?); refusing it: remove it or set OBDFS_RUN_DIR", dir)
	case st.Uid != uid:
		return fmt.Errorf("run directory %s is owned by uid %d, not %d; refusing it: remove it or set OBDFS_RUN_DIR", dir, st.Uid, uid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("run directory %s has mode %#o, writable by others; refusing it: chmod 700 it or set OBDFS_RUN_DIR", dir, st.Mode&0o7777)
	}
	return nil
}

// CleanMountpoint makes dir absolute and resolves symlinks in its parent
// (not in dir itself: a dead FUSE mount cannot be stat'ed), so every client
// names a mountpoint the same way.
func CleanMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if abs == "/" {
		return abs, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}

// maxSocketPath keeps sun_path (108 bytes with its NUL) safe.
const maxSocketPath = 100

// SocketPath is the control socket of the daemon serving mountpoint (a
// cleaned absolute path): RunDir()/<escaped mountpoint>.sock, or a hash of
// the mountpoint when the escaped name would not fit a socket address.
func SocketPath(mountpoint string) string {
	return runFile(mountpoint, ".sock")
}

// LogPath is where a background daemon of mountpoint writes its log.
func LogPath(mountpoint string) string {
	return runFile(mountpoint, ".log")
}

func runFile(mountpoint, ext string) string {
	dir := RunDir()
	p := filepath.Join(dir, escape(mountpoint)+ext)
	if len(p) > maxSocketPath {
		h := sha256.Sum256([]byte(mountpoint))
		p = filepath.Join(dir, "mnt-"+hex.EncodeToString(h[:12])+ext)
	}
	return p
}

// escape is systemd-escape --path in spirit: "/" becomes "-", and bytes
// that are not [A-Za-z0-9_.] (and "-" itself) become \xNN.
func escape(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}
