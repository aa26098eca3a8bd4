package loopdev_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/loopdev"

	"github.com/obdfs/obdfs/internal/testlayer"
)

func tempImage(t *testing.T, size int, mode os.FileMode) (string, []byte) {
	t.Helper()
	b := testlayer.Random(uint64(size), size)
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func attach(t *testing.T, file string, o loopdev.Options) *loopdev.Device {
	t.Helper()
	d, err := loopdev.Attach(file, o)
	if err != nil {
		t.Fatal(err)
	}
	// Device.Detach: the test may have detached d already, and the number
	// may serve another package's test by now.
	t.Cleanup(func() { d.Detach() })
	return d
}

func TestAttach(t *testing.T) {
	needs.Loop(t)
	for _, legacy := range []bool{false, true} {
		t.Run(map[bool]string{false: "configure", true: "legacy"}[legacy], func(t *testing.T) {
			defer loopdev.SetForceLegacy(legacy)()
			testAttach(t)
		})
	}
}

// testAttach runs the attach table with the ioctl path chosen by the caller.
func testAttach(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   loopdev.Options
		wantRO bool
		wantBS int
	}{
		{"ro", loopdev.Options{Mode: loopdev.ReadOnly}, true, 512},
		{"auto-rw", loopdev.Options{}, false, 512},
		{"rw-dio-4k", loopdev.Options{Mode: loopdev.ReadWrite, DirectIO: true, BlockSize: 4096}, false, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file, content := tempImage(t, 4<<20, 0o644)
			d := attach(t, file, tc.opts)
			if d.ReadOnly != tc.wantRO || d.BlockSize != tc.wantBS || d.Size != int64(len(content)) || d.BackingFile != file {
				t.Errorf("device %+v, want ro=%v bs=%d size=%d file=%s", d, tc.wantRO, tc.wantBS, len(content), file)
			}
			if tc.opts.DirectIO && !d.DirectIO {
				t.Errorf("direct I/O requested but the kernel does not use it: %+v", d)
			}
			got, err := os.ReadFile(d.Path)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("read %s: %v, equal=%v", d.Path, err, bytes.Equal(got, content))
			}
			f, err := os.OpenFile(d.Path, os.O_WRONLY, 0)
			if tc.wantRO && err != nil {
				return // refused at open: fine
			}
			if err != nil {
				t.Fatal(err)
			}
			patch := bytes.Repeat([]byte{0xAB}, 8192)
			_, err = f.WriteAt(patch, 1<<20)
			if tc.wantRO {
				f.Close()
				if err == nil {
					t.Errorf("write to a read-only device succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			back, _ := os.ReadFile(file)
			if !bytes.Equal(back[1<<20:1<<20+8192], patch) {
				t.Errorf("write through %s did not reach the file", d.Path)
			}
		})
	}
}

func TestAutoMode(t *testing.T) {
	needs.Loop(t)
	file, _ := tempImage(t, 1<<20, 0o444)
	// Root ignores mode bits; a read-only bind mount makes the file
	// really unwritable (EROFS), as a read-only FUSE stack file is.
	dir := filepath.Dir(file)
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	d := attach(t, file, loopdev.Options{})
	if !d.ReadOnly {
		t.Errorf("auto mode on an unwritable file: %+v, want read-only", d)
	}
	if _, err := loopdev.Attach(file, loopdev.Options{Mode: loopdev.ReadWrite}); !errors.Is(err, unix.EROFS) {
		t.Errorf("ReadWrite on an unwritable file: %v, want EROFS", err)
	}
}

func TestListDetach(t *testing.T) {
	needs.Loop(t)
	file, _ := tempImage(t, 1<<20, 0o644)
	d := attach(t, file, loopdev.Options{Mode: loopdev.ReadOnly})
	list, err := loopdev.List()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range list {
		found = found || (l.Path == d.Path && l.BackingFile == file)
	}
	if !found {
		t.Errorf("List %+v lacks %s", list, d.Path)
	}
	// A holder makes the kernel defer the detach to its close.
	h, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	deferred, err := d.Detach()
	if err != nil || !deferred {
		t.Errorf("detach while open: deferred=%v err=%v", deferred, err)
	}
	h.Close()
	// The number is free now; another process may have taken it already.
	if i, err := loopdev.Info(d.Path); !errors.Is(err, loopdev.ErrNotLoop) && (err != nil || i.BackingFile == file) {
		t.Errorf("after last close: %+v %v, want ErrNotLoop", i, err)
	}
	if _, err := d.Detach(); !errors.Is(err, loopdev.ErrNotLoop) {
		t.Errorf("second detach: %v, want ErrNotLoop", err)
	}
	if _, err := loopdev.DetachBacking(d.Path, file); !errors.Is(err, loopdev.ErrNotLoop) {
		t.Errorf("detach by backing file after the detach: %v, want ErrNotLoop", err)
	}
	if _, err := loopdev.Detach("/dev/sda"); !errors.Is(err, loopdev.ErrNotLoop) {
		t.Errorf("detach /dev/sda: %v, want ErrNotLoop", err)
	}
}

func TestAutoclear(t *testing.T) {
	needs.Loop(t)
	file, _ := tempImage(t, 1<<20, 0o644)
	d := attach(t, file, loopdev.Options{Mode: loopdev.ReadOnly, Autoclear: true})
	// Attach's own fd was the last opener: the device is already gone
	// (and its number may serve another process already).
	if i, err := loopdev.Info(d.Path); !errors.Is(err, loopdev.ErrNotLoop) && (err != nil || i.BackingFile == file) {
		t.Errorf("autoclear device still bound after Attach returned: %+v %v", i, err)
	}
}

func TestBadInput(t *testing.T) {
	needs.Loop(t)
	if _, err := loopdev.Attach(filepath.Join(t.TempDir(), "missing"), loopdev.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	file, _ := tempImage(t, 1<<20, 0o644)
	if _, err := loopdev.Attach(file, loopdev.Options{BlockSize: 3000}); err == nil {
		t.Errorf("block size 3000 accepted")
	}
}
