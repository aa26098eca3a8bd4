package regfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Nothing but a regular file opens, and nothing blocks: a FIFO with no
// writer would block a plain open forever.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "reg")
	os.WriteFile(reg, []byte("x"), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
		flag       int
	}{
		{reg, "", os.O_RDONLY},
		{reg, "", os.O_RDWR},
		{fifo, "a FIFO, not a regular file", os.O_RDONLY},
		{fifo, "a FIFO, not a regular file", os.O_RDWR},
		{dir, "a directory, not a regular file", os.O_RDONLY},
		{"/dev/null", "a character device, not a regular file", os.O_RDONLY},
	} {
		done := make(chan error, 1)
		go func() {
			f, err := Open(tc.path, tc.flag)
			if err == nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.path+": "+tc.want)) {
				t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: open blocked", tc.path)
		}
	}
	if f, st, err := OpenStat(reg, os.O_RDONLY); err != nil || st.Size() != 1 || !st.Mode().IsRegular() {
		t.Errorf("OpenStat %s: %v %v", reg, st, err)
	} else {
		f.Close()
	}
	if _, err := ReadFile(reg, 0); err == nil {
		t.Error("ReadFile over its limit succeeded")
	}
	if b, err := ReadFile(reg, 1); err != nil || string(b) != "x" {
		t.Errorf("ReadFile: %q %v", b, err)
	}
}
