package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/needs"
)

// TestNonRegularLayers: a FIFO (or a directory, or a device) named as a
// layer, a writable layer's file or a config is refused at once with the
// path and what it is; nothing waits for a FIFO writer, and the daemon's
// control path keeps answering.
func TestNonRegularLayers(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	w := t.TempDir()
	p := func(n string) string { return filepath.Join(w, n) }
	fifo := p("fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(p("fifo.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustObdfs(t, "create", "--size", "4194304", p("l.data"), p("l.index"))
	fifoUpper := rwConfig(t, p("u.json"), p("l.data"), fifo)
	mp := mount(t, "base="+filepath.Join(fixtures, "d/l1.lsmt"))
	for _, tc := range []struct {
		spec, path, what string
	}{
		{fifo, fifo, "a FIFO"},
		{filepath.Join(fixtures, "d/l1.lsmt") + "," + fifo, fifo, "a FIFO"},
		{p("fifo.json"), p("fifo.json"), "a FIFO"},
		{fifoUpper, fifo, "a FIFO"},
		{"/dev/zero", "/dev/zero", "a character device"},
	} {
		want := tc.path + ": " + tc.what + ", not a regular file"
		for _, args := range [][]string{{"cat", "--length", "512", tc.spec}, {"stack", "add", mp, "x=" + tc.spec}} {
			if _, err := obdfs(t, args...); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("obdfs %s: %v, want an error containing %q", strings.Join(args, " "), err, want)
			}
		}
	}
	if ls := mustObdfs(t, "stack", "ls", mp); !strings.Contains(ls, "base") || strings.Contains(ls, "x ") {
		t.Errorf("stack ls after the refusals:\n%s", ls)
	}
	if _, err := os.Stat(filepath.Join(mp, "x")); err == nil {
		t.Error("a refused stack is served")
	}
}

// obdfsEnv runs obdfs with extra environment variables.
func obdfsEnv(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(obdfsBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("obdfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TestDaemonLogs: the daemon log is private (0600 in a 0700 run
// directory), a symlink planted at its path is refused rather than
// followed, a mount that fails leaves no log, and a clean stop removes it.
func TestDaemonLogs(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	rd := filepath.Join(t.TempDir(), "run")
	env := []string{"OBDFS_RUN_DIR=" + rd}
	layer := filepath.Join(fixtures, "d/l1.lsmt")
	mp := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mp, 0o755)
	t.Cleanup(func() { obdfsEnv(t, env, "umount", mp); unix.Unmount(mp, unix.MNT_DETACH) })
	logs := func() []string { m, _ := filepath.Glob(filepath.Join(rd, "*.log")); return m }

	if _, err := obdfsEnv(t, env, "mount", mp, "a="+filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("mount of a missing layer succeeded")
	}
	if l := logs(); len(l) != 0 {
		t.Errorf("a failed mount left %v", l)
	}
	if _, err := obdfsEnv(t, env, "mount", mp, "a="+layer); err != nil {
		t.Fatal(err)
	}
	l := logs()
	if len(l) != 1 {
		t.Fatalf("logs while serving: %v", l)
	}
	if st, err := os.Stat(l[0]); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("log %s: %v %v", l[0], st.Mode(), err)
	}
	if st, err := os.Stat(rd); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("run directory: %v %v", st.Mode(), err)
	}
	if _, err := obdfsEnv(t, env, "umount", mp); err != nil {
		t.Fatal(err)
	}
	if l := logs(); len(l) != 0 {
		t.Errorf("a clean stop left %v", l)
	}

	// Another user's trick: the log path is a symlink to a file of the victim.
	victim := filepath.Join(t.TempDir(), "bashrc")
	os.WriteFile(victim, []byte("keep\n"), 0o644)
	if err := os.Symlink(victim, l[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := obdfsEnv(t, env, "mount", mp, "a="+layer); err == nil {
		t.Error("mount followed a symlink planted at its log path")
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

// TestStackAddRelative: `stack add` resolves a relative STACK against the
// caller's directory, not the daemon's: a layer of the same name in the
// daemon's directory is not what gets served.
func TestStackAddRelative(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	daemonDir, callerDir := t.TempDir(), t.TempDir()
	for dir, src := range map[string]string{daemonDir: "d/l1.lsmt", callerDir: "d/l2.lsmt"} {
		b, err := os.ReadFile(filepath.Join(fixtures, src))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "layer.lsmt"), b, 0o644)
	}
	mp := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mp, 0o755)
	cmd := exec.Command(obdfsBin, "mount", mp, "base=layer.lsmt")
	cmd.Dir = daemonDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	t.Cleanup(func() { unmount(t, mp) })
	cmd = exec.Command(obdfsBin, "stack", "add", mp, "rel=layer.lsmt")
	cmd.Dir = callerDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("stack add: %v\n%s", err, out)
	}
	want := filepath.Join(t.TempDir(), "want.raw")
	mustObdfs(t, "cat", "-o", want, filepath.Join(callerDir, "layer.lsmt"))
	if fileSHA(t, filepath.Join(mp, "rel")) != fileSHA(t, want) {
		t.Fatal("stack add did not serve the caller's layer.lsmt")
	}
	if ls := mustObdfs(t, "stack", "ls", mp); !strings.Contains(ls, filepath.Join(callerDir, "layer.lsmt")) {
		t.Fatalf("stack ls does not show the caller's absolute path:\n%s", ls)
	}
}

// readAs reads the first 4 KiB of path as uid:gid and returns the error.
func readAs(uid, gid uint32, path string) error {
	cmd := exec.Command("dd", "if="+path, "of=/dev/null", "bs=4096", "count=1", "status=none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// TestAccess: a mount is private to the user who made it unless told
// otherwise; --uid/--gid/--mode hand the files to one user (qemu's) without
// giving them to everyone, per mount and per stack; --allow-other opens the
// mount to whatever the modes allow.
func TestAccess(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	needs.Commands(t, "dd")
	// Other users must reach the mountpoint: no 0700 test directories.
	base, err := os.MkdirTemp("", "obdfs-access-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	layer := filepath.Join(fixtures, "d/l1.lsmt")
	const qemu, other = 65534, 65533
	newMP := func(n string) string {
		mp := filepath.Join(base, n)
		os.Mkdir(mp, 0o755)
		return mp
	}
	check := func(path string, uid, gid, mode uint32) {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != uid || st.Gid != gid || st.Mode&0o7777 != mode {
			t.Errorf("%s: uid %d gid %d mode %#o, want %d %d %#o", path, st.Uid, st.Gid, st.Mode&0o7777, uid, gid, mode)
		}
	}
	canRead := func(path string, uid uint32, want bool) {
		t.Helper()
		if err := readAs(uid, uid, path); (err == nil) != want {
			t.Errorf("uid %d reading %s: %v, want allowed=%v", uid, path, err, want)
		}
	}

	// Default: private to root.
	mp := newMP("private")
	mountAt(t, mp, "a="+layer)
	check(filepath.Join(mp, "a"), 0, 0, 0o444)
	canRead(filepath.Join(mp, "a"), qemu, false)
	if _, err := obdfs(t, "stack", "add", "--uid", "65534", mp, "b="+layer); err == nil || !strings.Contains(err.Error(), "--allow-other") {
		t.Errorf("stack add --uid on a private mount: %v", err)
	}

	// --uid/--gid: qemu's user reads, nobody else does.
	mp = newMP("qemu")
	mountAt(t, mp, "--uid", "65534", "--gid", "65534", "a="+layer)
	check(filepath.Join(mp, "a"), qemu, qemu, 0o440)
	canRead(filepath.Join(mp, "a"), qemu, true)
	canRead(filepath.Join(mp, "a"), other, false)
	// Per stack: another owner, a mode that shuts the group out.
	mustObdfs(t, "stack", "add", "--uid", "65533", "--mode", "0600", mp, "b="+layer)
	check(filepath.Join(mp, "b"), other, qemu, 0o400)
	canRead(filepath.Join(mp, "b"), other, true)
	canRead(filepath.Join(mp, "b"), qemu, false)

	// --allow-other alone: the default 0644 lets everyone read.
	mp = newMP("open")
	mountAt(t, mp, "--allow-other", "a="+layer)
	canRead(filepath.Join(mp, "a"), other, true)
}

// TestMountpointChecks: a mountpoint with files is refused (the mount would
// hide them) unless --nonempty; --readahead-kb -1, as documented, mounts.
func TestMountpointChecks(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	layer := filepath.Join(fixtures, "d/l1.lsmt")
	mp := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mp, 0o755)
	os.WriteFile(filepath.Join(mp, "precious"), []byte("x"), 0o644)
	if _, err := obdfs(t, "mount", mp, "a="+layer); err == nil || !strings.Contains(err.Error(), "not empty (precious") || !strings.Contains(err.Error(), "--nonempty") {
		t.Fatalf("mount over a non-empty directory: %v", err)
	}
	if mounted(mp) {
		t.Fatal("refused mount is mounted")
	}
	mountAt(t, mp, "--nonempty", "--readahead-kb", "-1", "a="+layer)
	if _, err := os.Stat(filepath.Join(mp, "a")); err != nil {
		t.Fatal(err)
	}
	unmount(t, mp)
	if b, err := os.ReadFile(filepath.Join(mp, "precious")); err != nil || string(b) != "x" {
		t.Fatalf("hidden file after unmount: %q %v", b, err)
	}
}
