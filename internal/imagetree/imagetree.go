// Package imagetree is for tests that check what an obdfs image holds: it
// opens the image, mounts its filesystem through the build engine (FUSE, a
// loop device, ext4; root only) and snapshots the tree with treetest.
package imagetree

import (
	"testing"

	"github.com/obdfs/obdfs/build"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/internal/treetest"
	"github.com/obdfs/obdfs/remote"
)

// Snapshot returns the tree of the image spec (see image.Open), without
// the lost+found of ext4. An empty o.CacheDir gets a temporary directory.
func Snapshot(t testing.TB, spec string, o remote.Options) map[string]treetest.Entry {
	t.Helper()
	if o.CacheDir == "" {
		o.CacheDir = t.TempDir()
	}
	st, err := image.Open(spec, image.Options{Remote: o})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := build.NewLayer(build.Options{Base: st, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatalf("mount %s: %v", spec, err)
	}
	defer v.Close()
	snap, err := treetest.Snapshot(v.Root(), "lost+found")
	if err != nil {
		t.Fatal(err)
	}
	return snap
}
