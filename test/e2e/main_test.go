// Package e2e drives the obdfs binary end to end: real FUSE mounts, loop
// devices, ext4, qemu-img. Every test needs root and skips without it.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/fixture"
	"github.com/obdfs/obdfs/internal/fusetest"
	"github.com/obdfs/obdfs/internal/needs"
)

var (
	obdfsBin string // built by TestMain
	runDir   string // OBDFS_RUN_DIR of every daemon started here
	buildErr error
)

var fixtures = fixture.OracleDir()

// Expected sha256 of the 64 MiB fixture disks (fixtures README).
const (
	shaBase  = "3a8114c638a5bd9111d70a534daf9e37128b775614357a32ef389785f434d81f"
	shaL12   = "8d604efb09c218d305275b75b9796e1995ed93b54cad0d862cb134ac5b4dbf24"
	shaStack = "b2315973658f86ec78a1431df439b451b12dd0bad74a39dfd3de10087d63b4e7"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obdfs-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	obdfsBin = filepath.Join(dir, "obdfs")
	runDir = filepath.Join(dir, "run")
	os.Setenv("OBDFS_RUN_DIR", runDir)
	out, err := exec.Command("go", "build", "-o", obdfsBin, "github.com/obdfs/obdfs/cmd/obdfs").CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("go build obdfs: %v\n%s", err, out)
	}
	code := fusetest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	needs.Root(t, "FUSE mounts, loop devices, ext4")
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func needFixtures(t *testing.T) {
	t.Helper()
	fixture.Oracle(t, "d/l1.lsmt")
}

// run runs a command with a deadline (no test may hang on a dead mount).
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func obdfs(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(t, obdfsBin, transport(args)...)
}

func mustObdfs(t *testing.T, args ...string) string {
	t.Helper()
	return must(t, obdfsBin, transport(args)...)
}

// transport adds the FUSE transport of this run to a mount command.
func transport(args []string) []string {
	if len(args) > 0 && args[0] == "mount" {
		return append([]string{"mount", "--fuse-uring=" + fusetest.URing()}, args[1:]...)
	}
	return args
}

// mount starts a daemon on a new mountpoint and stops it in Cleanup,
// falling back to a lazy unmount and SIGKILL so nothing outlives the test.
func mount(t *testing.T, stacks ...string) string {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	mountAt(t, mp, stacks...)
	return mp
}

func mountAt(t *testing.T, mp string, stacks ...string) {
	t.Helper()
	mustObdfs(t, append([]string{"mount", mp}, stacks...)...)
	t.Cleanup(func() { unmount(t, mp) })
}

func unmount(t *testing.T, mp string) {
	if !mounted(mp) {
		return
	}
	pid := daemonPid(mp)
	if _, err := obdfs(t, "umount", mp); err != nil {
		t.Logf("cleanup: %v; lazy unmount", err)
		unix.Unmount(mp, unix.MNT_DETACH)
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func mounted(mp string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == mp {
			return true
		}
	}
	return false
}

// daemonPid finds the daemon serving mp (its command line holds the
// mountpoint and --foreground).
func daemonPid(mp string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && args[0] == obdfsBin && strings.Contains(string(b), "\x00--foreground") && strings.Contains(string(b), "\x00"+mp+"\x00") {
			if st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); bytes.Contains(st, []byte(") Z ")) {
				continue
			}
			return pid
		}
	}
	return 0
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// loopAttach attaches through the CLI (the file is the last argument) and
// detaches in Cleanup if the device still serves that file: tests detach
// their devices themselves, and by Cleanup time the number may belong to a
// test of another package.
func loopAttach(t *testing.T, args ...string) string {
	t.Helper()
	dev := strings.TrimSpace(mustObdfs(t, append([]string{"loop", "attach"}, args...)...))
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("loop attach printed %q", dev)
	}
	file := args[len(args)-1]
	t.Cleanup(func() { obdfs(t, "loop", "detach", "--backing", file, dev) })
	return dev
}

// mountExt4 mounts dev and unmounts it in Cleanup (lazily if busy).
func mountExt4(t *testing.T, dev string, ro bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ext4")
	os.Mkdir(dir, 0o755)
	opts := []string{"-t", "ext4"}
	if ro {
		opts = append(opts, "-o", "ro,noload")
	}
	must(t, "mount", append(opts, dev, dir)...)
	t.Cleanup(func() {
		if mounted(dir) {
			if err := unix.Unmount(dir, 0); err != nil {
				unix.Unmount(dir, unix.MNT_DETACH)
			}
		}
	})
	return dir
}

func writeJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

type upper struct {
	Data  string `json:"data"`
	Index string `json:"index"`
}

type lower struct {
	File string `json:"file"`
}

type config struct {
	Lowers []lower `json:"lowers,omitempty"`
	Upper  upper   `json:"upper"`
}

// rwConfig writes an image config: lowers plus a writable upper.
func rwConfig(t *testing.T, p string, data, index string, lowers ...string) string {
	t.Helper()
	c := config{Upper: upper{Data: data, Index: index}}
	for _, l := range lowers {
		c.Lowers = append(c.Lowers, lower{File: l})
	}
	writeJSON(t, p, c)
	return p
}

func regexpLine(s, re string) bool {
	return regexp.MustCompile("(?m)" + re).MatchString(s)
}
