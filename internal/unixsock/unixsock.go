// Package unixsock claims a unix socket path for a daemon's listener (the
// control socket, the metrics endpoint).
package unixsock

import (
	"errors"
	"net"
	"os"
	"time"
)

// ErrInUse is returned when a process answers on the socket already.
var ErrInUse = errors.New("another process listens there")

// Listen listens on the unix socket at path, mode 0600, removed on Close.
// A socket file nobody answers on is stale (left by a killed daemon) and
// replaced; one that answers is ErrInUse.
func Listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, ErrInUse
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
