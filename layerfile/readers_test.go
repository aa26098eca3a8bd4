package layerfile_test

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"
	"github.com/obdfs/obdfs/internal/testlayer"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
)

// TestReaderAtContract runs testing/iotest over every reader layer a layer
// file is read through: the tar member, the ZFile reader, an LSMT file and
// a stack of them. (remote.Blob has the same check in package remote.)
func TestReaderAtContract(t *testing.T) {
	open := func(t *testing.T, rel string) *layerfile.File {
		f, err := layerfile.OpenPath(fixture.Oracle(t, rel), layerfile.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	// A tar-wrapped copy of d/l3.lsmt, so the member is a real section.
	tarred := filepath.Join(t.TempDir(), "l3.tar")
	l3 := fixture.Read(t, "oracle/d/l3.lsmt")
	if err := layerfile.Copy(tarred, bytes.NewReader(l3), layerfile.WriteOptions{Tar: true}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    func(t *testing.T) (io.ReaderAt, []byte)
	}{
		{"tar member", func(t *testing.T) (io.ReaderAt, []byte) {
			f, err := layerfile.OpenPath(tarred, layerfile.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			if !f.Kind.Tar {
				t.Fatalf("kind %v", f.Kind)
			}
			return f.Member, l3
		}},
		{"zfile lz4", func(t *testing.T) (io.ReaderAt, []byte) {
			return open(t, "b/base.lz4.zfile").ZFile, fixture.Read(t, "oracle/a/base.lsmt")
		}},
		{"zfile zstd", func(t *testing.T) (io.ReaderAt, []byte) {
			return open(t, "c/base.zstd.tool.zfile").ZFile, fixture.Read(t, "oracle/a/base.lsmt")
		}},
		{"lsmt file", func(t *testing.T) (io.ReaderAt, []byte) {
			return open(t, "a/base.lsmt").LSMT, testlayer.ExpectedDisk(t, "expected-base.raw.zst")
		}},
		{"lsmt file in zfile", func(t *testing.T) (io.ReaderAt, []byte) {
			return open(t, "b/base.lz4.zfile").LSMT, testlayer.ExpectedDisk(t, "expected-base.raw.zst")
		}},
		{"lsmt stack", func(t *testing.T) (io.ReaderAt, []byte) {
			var files []*lsmt.File
			for _, rel := range []string{"d/l1.lsmt", "d/l2.lsmt", "d/l3.lsmt"} {
				files = append(files, open(t, rel).LSMT)
			}
			s, err := lsmt.NewStack(files, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s, testlayer.ExpectedDisk(t, "expected-stack.raw.zst")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, want := tc.r(t)
			// The last 16 KiB (iotest reads byte by byte too), and
			// across a 4 KiB block boundary at the start.
			testlayer.TestReaderAt(t, r, want, max(0, int64(len(want))-16<<10-100))
		})
	}
}
