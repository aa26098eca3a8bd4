package build

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/obdfs/obdfs/internal/treetest"
)

// FuzzApply applies arbitrary tars: whatever the entries, nothing may be
// created, changed or removed outside the root, and Apply must return.
func FuzzApply(f *testing.F) {
	for _, l := range treetest.Layers() {
		f.Add(l)
	}
	for _, l := range treetest.Escapes() {
		f.Add(l)
	}
	f.Add(treetest.EscapeBySymlink("/outside"))
	// One sandbox for every input (a fresh temp dir per input halved the
	// rate): TOP/root is emptied and TOP/canary rewritten before each.
	top := f.TempDir()
	root := filepath.Join(top, "root")
	canary := filepath.Join(top, "canary")
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return
		}
		// Big (or sparse-expanded) entries only cost time here.
		tr := tar.NewReader(bytes.NewReader(b))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if h.Size > 1<<20 {
				return
			}
		}
		if err := os.RemoveAll(root); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(canary, []byte("c"), 0o644); err != nil {
			t.Fatal(err)
		}
		Apply(root, io.LimitReader(bytes.NewReader(b), int64(len(b))), "fuzz")
		ents, err := os.ReadDir(top)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 2 {
			t.Fatalf("entries beside the root: %v", ents)
		}
		if c, err := os.ReadFile(canary); err != nil || string(c) != "c" {
			t.Fatalf("canary beside the root changed: %q %v", c, err)
		}
		// The root itself must still be a directory (never replaced).
		if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
			t.Fatalf("root replaced: %v %v", fi, err)
		}
	})
}
