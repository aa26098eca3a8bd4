package build

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/internal/leakcheck"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/treetest"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/zfile"
)

// rootUse is what the root-only tests here do with root.
const rootUse = "chown, mknod, trusted.* xattrs, FUSE, loop devices and ext4 mounts"

// applyAll extracts the layer tars into a fresh directory on the host's
// filesystem.
func applyAll(t *testing.T, layers [][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for i, l := range layers {
		if _, err := Apply(dir, bytes.NewReader(l), "layer"+string(rune('1'+i))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestApplySemantics(t *testing.T) {
	needs.Root(t, rootUse)
	dir := applyAll(t, treetest.Layers())
	snap, err := treetest.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		ok   func(e treetest.Entry) bool
	}{
		{"gone-file", nil},
		{"gone-dir/sub", nil},
		{"opaque/old1", nil},
		{"opaque/olddir", nil},
		{"keep/a", nil},
		{"to-file/child", nil},
		{"to-dir/child", nil}, // made opaque by layer 3
		{"gone-dir/back", func(e treetest.Entry) bool { return e.Type == "reg" }},
		{"same-layer", func(e treetest.Entry) bool { return e.Type == "reg" }},
		{"opaque/new-before", func(e treetest.Entry) bool { return e.Type == "reg" }},
		{"opaque/new-after", func(e treetest.Entry) bool { return e.Type == "reg" }},
		{"keep/b", func(e treetest.Entry) bool { return e.Type == "reg" }},
		{"to-file", func(e treetest.Entry) bool { return e.Type == "reg" && e.Mode == 0o600 }},
		{"to-dir", func(e treetest.Entry) bool { return e.Type == "dir" && e.Mode == 0o711 }},
		{"bin/tool", func(e treetest.Entry) bool { return e.Mode == 0o4755 && e.Nlink == 2 }},
		{"bin/sgid", func(e treetest.Entry) bool { return e.Mode == 0o2711 && e.GID == 50 }},
		{"bin", func(e treetest.Entry) bool { return e.Mode == 0o700 }},
		{"tmp", func(e treetest.Entry) bool { return e.Mode == 0o1777 }},
		{"etc/owned", func(e treetest.Entry) bool { return e.UID == 1234 && e.GID == 5678 }},
		{"shared/lower", func(e treetest.Entry) bool { return e.Nlink == 2 && e.UID == 7 }},
		{"bin/ping", func(e treetest.Entry) bool { return e.Xattrs["security.capability"] == treetest.Capability() }},
		{"etc/xattrs", func(e treetest.Entry) bool {
			return e.Xattrs["user.comment"] == "hello" && e.Xattrs["trusted.overlay.foo"] == "bar"
		}},
		{"dev/null", func(e treetest.Entry) bool { return e.Type == "char" && e.Rdev == 0x103 }},
		{"dev/sda9", func(e treetest.Entry) bool { return e.Type == "block" && e.Rdev == 0x809 }},
		{"dev/fifo", func(e treetest.Entry) bool { return e.Type == "fifo" && e.Mode == 0o620 }},
		{"etc/empty", func(e treetest.Entry) bool { return e.Type == "symlink" && e.Link == "owned" }},
		{"etc/abs-link", func(e treetest.Entry) bool { return e.Link == "/etc/owned" }},
		{"etc/dangling", func(e treetest.Entry) bool { return e.Type == "reg" }},
		{"etc/owned", func(e treetest.Entry) bool { return e.MTime%1e9 != 0 }}, // nanoseconds kept
	} {
		e, ok := snap[c.path]
		if c.ok == nil {
			if ok {
				t.Errorf("%s: should be gone, is %v", c.path, e)
			}
			continue
		}
		if !ok || !c.ok(e) {
			t.Errorf("%s: unexpected %v (present %v)", c.path, e, ok)
		}
	}
	// Zero blocks are holes: 3 MiB with 8 KiB of data.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "data/sparse.bin"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 3<<20 || st.Blocks*512 > 64<<10 {
		t.Errorf("data/sparse.bin: size %d, %d bytes allocated; want 3 MiB, sparse", st.Size, st.Blocks*512)
	}
}

func TestApplyRefusesEscapes(t *testing.T) {
	needs.Root(t, rootUse)
	for name, tarball := range treetest.Escapes() {
		t.Run(name, func(t *testing.T) {
			top := t.TempDir()
			root := filepath.Join(top, "a", "b", "root")
			if err := os.MkdirAll(filepath.Join(root, "a"), 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(top, "a", ".wh.victim"), nil, 0o644)
			os.WriteFile(filepath.Join(top, "a", "b", "victim"), []byte("v"), 0o644)
			_, err := Apply(root, bytes.NewReader(tarball), name)
			if !errors.Is(err, ErrEscape) {
				t.Fatalf("err = %v, want ErrEscape", err)
			}
			if _, err := os.Stat(filepath.Join(top, "a", "b", "victim")); err != nil {
				t.Errorf("the file outside was removed: %v", err)
			}
			checkNothingOutside(t, top, root, 2)
		})
	}
	t.Run("symlinked-parents", func(t *testing.T) {
		top := t.TempDir()
		root := filepath.Join(top, "root")
		outside := filepath.Join(top, "outside")
		for _, d := range []string{root, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := Apply(root, bytes.NewReader(treetest.EscapeBySymlink(outside)), "symlinks"); err != nil {
			t.Fatal(err)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Errorf("%d entries written outside the root: %v", len(ents), ents)
		}
		// Inside, as a container sees it: ROOT/<outside>/pwned-*.
		for _, f := range []string{"pwned-abs", "pwned-up", "hl"} {
			if _, err := os.Stat(filepath.Join(root, outside, f)); err != nil {
				t.Errorf("%s not resolved inside the root: %v", f, err)
			}
		}
	})
}

// checkNothingOutside fails if top holds anything but root's ancestors and
// the fixtures made there (n files).
func checkNothingOutside(t *testing.T, top, root string, n int) {
	t.Helper()
	count := 0
	filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
		if p == root {
			return filepath.SkipDir
		}
		if err == nil && !d.IsDir() {
			count++
		}
		return nil
	})
	if ents, _ := os.ReadDir(root); len(ents) > 1 {
		t.Errorf("root holds %d entries after a refused tar", len(ents))
	}
	if count != n {
		t.Errorf("%d files outside the root, want %d", count, n)
	}
}

// TestLayerRoundTrip builds the three layers through the engine (FUSE,
// loop, ext4, commit), then mounts the committed stack and compares it with
// the same tars applied to a plain directory.
func TestLayerRoundTrip(t *testing.T) {
	needs.Root(t, rootUse)
	leaks := leakcheck.Take()
	defer leaks.Check(t)
	layers := treetest.Layers()
	want, err := treetest.Snapshot(applyAll(t, layers))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var files []string
	zo := &zfile.WriterOptions{Algorithm: zfile.LZ4, BlockSize: 4096}
	for i, tarball := range layers {
		var base *image.Stack
		if len(files) > 0 {
			if base, err = image.Open(strings.Join(files, ","), image.Options{}); err != nil {
				t.Fatal(err)
			}
		}
		l, err := NewLayer(Options{Base: base, VirtualSize: 1 << 30, WorkDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Apply(bytes.NewReader(tarball), "layer"); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "l"+string(rune('1'+i))+".commit")
		if err := l.CommitFile(out, CommitArgs{}, layerfile.WriteOptions{ZFile: zo, Tar: i == 2}); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if base != nil {
			base.Close()
		}
		files = append(files, out)
	}
	base, err := image.Open(strings.Join(files, ","), image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	view, err := NewLayer(Options{Base: base, WorkDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	got, err := treetest.Snapshot(view.Root(), "lost+found")
	if err != nil {
		t.Fatal(err)
	}
	if err := view.Close(); err != nil {
		t.Error(err)
	}
	base.Close()
	// The ext4 root was made by mkfs; the tar's "./" entry set its metadata,
	// but lost+found changed its link count only.
	for _, d := range treetest.Diff(want, got, 20) {
		t.Error(d)
	}
}

// TestApplyXattrsOnSpecialFiles: user.* xattrs the kernel refuses on
// symlinks and devices are skipped, others are set.
func TestApplyXattrsOnSpecialFiles(t *testing.T) {
	needs.Root(t, rootUse)
	dir := t.TempDir()
	x := map[string]string{"SCHILY.xattr.user.x": "u", "SCHILY.xattr.trusted.y": "t"}
	tarball := treetest.Tar([]treetest.TarEntry{
		{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "target", PAXRecords: x}},
		{Hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o644, PAXRecords: x}},
	})
	if _, err := Apply(dir, bytes.NewReader(tarball), "special"); err != nil {
		t.Fatal(err)
	}
	snap, err := treetest.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"link", "fifo"} {
		if snap[n].Xattrs["trusted.y"] != "t" {
			t.Errorf("%s: %v", n, snap[n])
		}
	}
}

// TestApplyGNUSparse: tars GNU tar writes for sparse files (old GNU and PAX
// 1.0 sparse headers) are extracted with the same content, sparse.
func TestApplyGNUSparse(t *testing.T) {
	needs.Root(t, rootUse)
	needs.Commands(t, "tar")
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8<<20)
	for _, off := range []int{0, 3 << 20, 8<<20 - 4096} {
		copy(want[off:], bytes.Repeat([]byte("data"), 1024))
		f.WriteAt(want[off:off+4096], int64(off))
	}
	f.Close()
	for _, format := range []string{"gnu", "posix"} {
		t.Run(format, func(t *testing.T) {
			out, err := exec.Command("tar", "--sparse", "--format="+format, "-C", src, "-cf", "-", "sparse").Output()
			if err != nil {
				t.Fatal(err)
			}
			if len(out) > 1<<20 {
				t.Fatalf("tar wrote %d bytes: not sparse", len(out))
			}
			dir := t.TempDir()
			if _, err := Apply(dir, bytes.NewReader(out), format); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "sparse"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("content differs")
			}
			var st unix.Stat_t
			unix.Stat(filepath.Join(dir, "sparse"), &st)
			if st.Blocks*512 > 1<<20 {
				t.Errorf("%d bytes allocated for 12 KiB of data", st.Blocks*512)
			}
		})
	}
}

// TestApplyBadTars: truncated or corrupt input fails with the entry count
// and the cause, never a partial success.
func TestApplyBadTars(t *testing.T) {
	needs.Root(t, rootUse)
	l := treetest.Layers()[0]
	for name, b := range map[string][]byte{
		"truncated-header":  l[:700],
		"at-a-boundary":     l[:1536],
		"empty":             nil,
		"truncated-content": l[:len(l)/2],
		"garbage":           bytes.Repeat([]byte{0x5a}, 4096),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Apply(t.TempDir(), bytes.NewReader(b), name)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("err = %v, want a failure naming %s", err, name)
			}
		})
	}
}

// TestOpenSourceEarlyClose: closing a directory source before reading it
// all stops its goroutine.
func TestOpenSourceEarlyClose(t *testing.T) {
	leaks := leakcheck.Take()
	defer leaks.Check(t)
	dir := t.TempDir()
	for i := range 50 {
		os.WriteFile(filepath.Join(dir, "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), bytes.Repeat([]byte{1}, 64<<10), 0o644)
	}
	src, err := OpenSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
}
