// Package fusetest selects the transport the FUSE test suites (fusefs,
// server, test/e2e) mount with, so that the same tests run over /dev/fuse and
// over FUSE over io_uring: OBDFS_TEST_FUSE_URING=on selects io_uring (the
// Makefile's test target runs those packages a second time so), anything
// else /dev/fuse.
package fusetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Env is the variable that selects io_uring.
const Env = "OBDFS_TEST_FUSE_URING"

const param = "/sys/module/fuse/parameters/enable_uring"

// URing is the value for fusefs.MountOptions.URing and obdfs mount
// --fuse-uring: "on" when the run is over io_uring, else "off". "on" makes a
// mount that cannot use io_uring fail instead of falling back.
func URing() string {
	if os.Getenv(Env) == "on" {
		return "on"
	}
	return "off"
}

// Main runs the tests. Over io_uring (and as root) it turns the fuse module's
// enable_uring parameter on for the run and restores it afterwards; on a
// kernel without FUSE over io_uring it runs nothing and says so. Use as: func TestMain(m *testing.M) { os.Exit(fusetest.Main(m)) }.
func Main(m *testing.M) int {
	if URing() != "on" || os.Geteuid() != 0 {
		return m.Run()
	}
	// Test packages run in parallel: one at a time may own the parameter,
	// or one's restore would pull it from under another's mounts.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "obdfs-fusetest-uring.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	old, err := os.ReadFile(param)
	if errors.Is(err, os.ErrNotExist) {
		// Like a test that needs a missing device: skip, and say so.
		fmt.Fprintf(os.Stderr, "SKIP: %s=on: this kernel has no FUSE over io_uring (%s missing; needs 6.14+ with CONFIG_FUSE_IO_URING)\n", Env, param)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s=on: %v\n", Env, err)
		return 1
	}
	if err := os.WriteFile(param, []byte("Y"), 0); err != nil {
		fmt.Fprintf(os.Stderr, "%s=on: enabling FUSE over io_uring: %v\n", Env, err)
		return 1
	}
	code := m.Run()
	// Restore: other mounts of this machine get what they had.
	if err := os.WriteFile(param, []byte(strings.TrimSpace(string(old))), 0); err != nil {
		fmt.Fprintf(os.Stderr, "restoring %s: %v\n", param, err)
		return 1
	}
	return code
}
