package unixsock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestListen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	// A stale socket: its listener is gone, the file stays.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket file: %v", err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode(); m&os.ModeSocket == 0 || m.Perm() != 0o600 {
		t.Errorf("mode %v, want a socket, 0600", m)
	}
	if _, err := Listen(path); !errors.Is(err, ErrInUse) {
		t.Errorf("second Listen: %v, want ErrInUse", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("after Close: %v, want the file removed", err)
	}
	if _, err := Listen(filepath.Join(t.TempDir(), "no", "dir", "s.sock")); err == nil {
		t.Error("Listen in a missing directory succeeded")
	}
}
