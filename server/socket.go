package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// RunDir is the directory of control sockets and daemon logs:
// $OBDFS_RUN_DIR, else /run/obdfs for root, else $XDG_RUNTIME_DIR/obdfs,
// else /tmp/obdfs-UID.
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
