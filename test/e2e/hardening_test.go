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
