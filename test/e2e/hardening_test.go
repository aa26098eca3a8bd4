package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
