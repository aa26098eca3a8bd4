// Package needs checks what a test needs from the machine. Root and kernel
// devices skip the test with a message naming what is missing: a developer
// may run the tests unprivileged or in a container. A command fails the
// test instead, since test/install-deps.sh (make deps, run by make test)
// installs every command a test uses; a skip would hide a gap in it.
package needs

import (
	"os"
	"os/exec"
	"testing"
)

// Root skips t unless it runs as root; why says what the test does with it
// ("mounts FUSE").
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s", why)
	}
}

// Device skips t unless the device node path exists; what names the kernel
// feature ("FUSE").
func Device(t testing.TB, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("needs %s: %v", what, err)
	}
}

// FUSE is Root and /dev/fuse, for tests that mount FUSE.
func FUSE(t testing.TB) {
	t.Helper()
	Root(t, "mounts FUSE")
	Device(t, "/dev/fuse", "FUSE")
}

// Loop is Root and /dev/loop-control, for tests that attach loop devices.
func Loop(t testing.TB) {
	t.Helper()
	Root(t, "attaches loop devices")
	Device(t, "/dev/loop-control", "loop devices")
}

// Commands fails t when one of names is not on PATH.
func Commands(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s missing: test/install-deps.sh installs it (make deps)", n)
		}
	}
}
