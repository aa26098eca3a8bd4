package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/obdfs/obdfs/build"
	"github.com/obdfs/obdfs/internal/imagetree"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/treetest"
	"github.com/obdfs/obdfs/remote"
)

// viewTree snapshots a stack through the build engine (FUSE, loop, ext4).
func viewTree(t *testing.T, spec string) map[string]treetest.Entry {
	t.Helper()
	return imagetree.Snapshot(t, spec, remote.Options{})
}

// TestBuildAndConvertCLI: obdfs build from tars and from a directory, and
// obdfs convert of a docker save archive, read back the same tree.
func TestBuildAndConvertCLI(t *testing.T) {
	needs.Root(t, "FUSE, loop devices, ext4 mounts")
	dir := t.TempDir()
	layers := treetest.Layers()
	var files []string
	for i, l := range layers {
		src := filepath.Join(dir, "l"+string(rune('1'+i))+".tar")
		if err := os.WriteFile(src, l, 0o644); err != nil {
			t.Fatal(err)
		}
		out := src + ".layer"
		args := []string{"build", "-z", "--vsize", "1GiB", src, out}
		if len(files) > 0 {
			args = append(args, "--base", strings.Join(files, ","))
		}
		run(t, args...)
		files = append(files, out)
	}
	built := viewTree(t, strings.Join(files, ","))

	// The same tree from a directory (extracted by Apply) in one layer.
	tree := t.TempDir()
	for i, l := range layers {
		if _, err := build.Apply(tree, bytes.NewReader(l), "layer"+string(rune('1'+i))); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "build", "--vsize", "1GiB", tree, filepath.Join(dir, "tree.layer"))
	for _, d := range treetest.Diff(built, viewTree(t, filepath.Join(dir, "tree.layer")), 20) {
		t.Error("directory build:", d)
	}
	runFail(t, "exists", "build", tree, filepath.Join(dir, "tree.layer"))

	// A tar on standard input, gzip-compressed.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(layers[0])
	zw.Close()
	cmd := exec.Command(obdfsBin, "build", "--vsize", "1GiB", "-", filepath.Join(dir, "stdin.layer"))
	cmd.Stdin = &gz
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build - < tar.gz: %v\n%s", err, out)
	}
	for _, d := range treetest.Diff(viewTree(t, files[0]), viewTree(t, filepath.Join(dir, "stdin.layer")), 20) {
		t.Error("stdin build:", d)
	}

	// obdfs import of a raw disk with holes reads back as the disk.
	disk := filepath.Join(dir, "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(16 << 20)
	f.WriteAt(bytes.Repeat([]byte("vm"), 4096), 5<<20)
	f.Close()
	out := run(t, "import", "-z", "-t", disk, filepath.Join(dir, "disk.layer"))
	if !strings.Contains(out, "raw disk of 16.0 MiB: 8.0 KiB written") {
		t.Errorf("import: %s", out)
	}
	run(t, "cat", "-o", filepath.Join(dir, "disk.back"), filepath.Join(dir, "disk.layer"))
	if sha(t, disk) != sha(t, filepath.Join(dir, "disk.back")) {
		t.Error("imported disk reads back differently")
	}

	// obdfs convert of a docker save archive.
	img := empty.Image
	for _, l := range layers {
		l := l
		tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, tl); err != nil {
			t.Fatal(err)
		}
	}
	archive := filepath.Join(dir, "save.tar")
	tag, _ := name.NewTag("example.test/app:v1")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	out = run(t, "convert", "-z", "--vsize", "1GiB", "--cache-dir", filepath.Join(dir, "cache"), archive, "oci:"+filepath.Join(dir, "oci")+":v1")
	if !strings.Contains(out, "3 layers (0 from the cache)") {
		t.Errorf("summary: %s", out)
	}
	for _, d := range treetest.Diff(built, viewTree(t, "oci:"+filepath.Join(dir, "oci")+":v1"), 20) {
		t.Error("convert:", d)
	}
	out = run(t, "convert", "-z", "--vsize", "1GiB", "--cache-dir", filepath.Join(dir, "cache"), archive, "oci:"+filepath.Join(dir, "oci")+":again")
	if !strings.Contains(out, "3 layers (3 from the cache)") {
		t.Errorf("second conversion did not use the cache: %s", out)
	}
	runFail(t, "docker save archive", "convert", filepath.Join(dir, "missing.tar"), "oci:"+filepath.Join(dir, "x"))
}

// TestBuildNeedsRoot: without root, build and convert say so.
func TestBuildNeedsRoot(t *testing.T) {
	needs.Root(t, "FUSE, loop devices, ext4 mounts") // to drop to nobody
	dir, err := os.MkdirTemp("", "obdfs-noroot")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	src := filepath.Join(dir, "l.tar")
	os.WriteFile(src, layersFirst(), 0o644)
	// The test binary's directory is private: a copy nobody can run.
	bin, err := os.ReadFile(obdfsBin)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "obdfs")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "build", src, filepath.Join(dir, "out.layer"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs root") {
		t.Fatalf("build as nobody: %v\n%s", err, out)
	}
}

func layersFirst() []byte { return treetest.Layers()[0] }
