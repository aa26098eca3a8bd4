package layerfile_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/zfile"
)

// TestOpenKinds classifies overlaybd's own files and the containers around
// them.
func TestOpenKinds(t *testing.T) {
	for _, tc := range []struct {
		rel      string
		kind     string
		c        layerfile.Content
		describe string // a line of DescribePath's output
	}{
		{"a/base.lsmt", "lsmt", layerfile.Committed, "kind: lsmt read-only layer"},
		{"b/base.lz4.zfile", "zfile+lsmt", layerfile.Committed, "zfile:          lz4, 4096-byte blocks"},
		{"b/base.lz4.tool.zfile", "zfile+lsmt", layerfile.Committed, "index fields from the trailer"},
		{"c/base.zstd.zfile", "zfile+lsmt", layerfile.Committed, "kind: zfile+lsmt read-only layer"},
		{"d/l3.lsmt", "lsmt", layerfile.Committed, "index: "},
		{"e/l3.data", "lsmt", layerfile.RWData, "kind: writable layer data file"},
		{"e/l3.index", "lsmt", layerfile.RWIndex, "kind: writable layer index file"},
	} {
		t.Run(tc.rel, func(t *testing.T) {
			f, err := layerfile.OpenPath(fixture.Oracle(t, tc.rel), layerfile.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Kind.String() != tc.kind || f.Kind.Content != tc.c {
				t.Fatalf("kind %q content %v, want %q %v", f.Kind, f.Kind.Content, tc.kind, tc.c)
			}
			if (f.LSMT != nil) != tc.c.ReadOnly() {
				t.Fatalf("LSMT opened: %v, read-only content: %v", f.LSMT != nil, tc.c.ReadOnly())
			}
			_, err = layerfile.OpenLayerPath(fixture.Oracle(t, tc.rel), layerfile.Options{})
			if tc.c.ReadOnly() != (err == nil) {
				t.Fatalf("OpenLayerPath: %v", err)
			}
			var out bytes.Buffer
			if err := layerfile.DescribePath(&out, fixture.Oracle(t, tc.rel)); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), strings.Join(strings.Fields(tc.describe), " ")) {
				t.Fatalf("DescribePath does not say %q:\n%s", tc.describe, out.String())
			}
		})
	}
}

// TestWriteContainers writes one committed layer through every container
// combination and reads it back through Open: same kind, same disk.
func TestWriteContainers(t *testing.T) {
	src, err := lsmt.Open(fixture.Oracle(t, "d/l3.lsmt"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := make([]byte, src.Size())
	if _, err := src.ReadAt(want, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	zstd, err := layerfile.Compression("zstd", 16)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		o    layerfile.WriteOptions
		kind string
	}{
		{"plain", layerfile.WriteOptions{}, "lsmt"},
		{"tar", layerfile.WriteOptions{Tar: true}, "tar+lsmt"},
		{"zfile", layerfile.WriteOptions{ZFile: &zfile.WriterOptions{}}, "zfile+lsmt"},
		{"zfile-keep-header", layerfile.WriteOptions{ZFile: &zfile.WriterOptions{}, KeepZFileHeader: true}, "zfile+lsmt"},
		{"tar-zstd", layerfile.WriteOptions{ZFile: zstd, Tar: true}, "tar+zfile+lsmt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name)
			a := lsmt.CommitArgs{UUID: "5ae3d3a4-2c8e-4f0b-9d4e-7a3f1c2b9e01", Message: tc.name}
			if err := layerfile.Commit(out, src, a, tc.o); err != nil {
				t.Fatal(err)
			}
			if err := layerfile.Commit(out, src, a, tc.o); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("second write without Replace: %v", err)
			}
			tc.o.Replace = true
			if err := layerfile.Commit(out, src, a, tc.o); err != nil {
				t.Fatal(err)
			}
			f, err := layerfile.OpenLayerPath(out, layerfile.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h := f.LSMT.Header()
			if f.Kind.String() != tc.kind || !strings.EqualFold(f.LSMT.UUID(), a.UUID) || h.Tag() != tc.name {
				t.Fatalf("kind %q uuid %s tag %q", f.Kind, f.LSMT.UUID(), h.Tag())
			}
			got := make([]byte, f.LSMT.Size())
			if _, err := f.LSMT.ReadAt(got, 0); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("disk differs after the round trip")
			}
			noTemp(t, dir)
		})
	}
}

// noTemp fails when a temporary file (a dot file) is left in dir.
func noTemp(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name()[0] == '.' {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
}

// TestWriteFailureLeavesNothing: a body that fails leaves neither the
// output nor a temporary file.
func TestWriteFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x")
	boom := errors.New("boom")
	err := layerfile.Write(out, layerfile.WriteOptions{Tar: true, ZFile: &zfile.WriterOptions{}}, func(w io.Writer) error {
		w.Write(make([]byte, 1<<20))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestNotALayer(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "garbage")
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := layerfile.OpenPath(p, layerfile.Options{})
	if err != nil || f.Kind.Content != layerfile.Unknown {
		t.Fatalf("Open: %v, %v", f, err)
	}
	f.Close()
	if _, err := layerfile.OpenLayerPath(p, layerfile.Options{}); err == nil {
		t.Fatal("OpenLayerPath of garbage succeeded")
	}
	// A ZFile of something that is not LSMT is a ZFile of unknown content.
	z := filepath.Join(dir, "z")
	if err := layerfile.Copy(z, bytes.NewReader(bytes.Repeat([]byte("y"), 10000)), layerfile.WriteOptions{ZFile: &zfile.WriterOptions{}}); err != nil {
		t.Fatal(err)
	}
	f, err = layerfile.OpenPath(z, layerfile.Options{})
	if err != nil || f.Kind.String() != "zfile" || f.ZFile == nil {
		t.Fatalf("Open: %+v, %v", f, err)
	}
	f.Close()
	if _, err := layerfile.Compression("lzo", 4); err == nil {
		t.Fatal("Compression(lzo) succeeded")
	}
	if _, err := layerfile.Compression("lz4", 128); err == nil {
		t.Fatal("Compression(lz4, 128 KiB) succeeded")
	}
}

// failAfter serves the first n bytes of b and fails every read beyond.
type failAfter struct {
	b   []byte
	n   int64
	err error
}

func (f *failAfter) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.n {
		return 0, f.err
	}
	return copy(p, f.b[off:]), nil
}

// A read that fails while the containers are probed is reported as the
// failure it is, never as "not an overlaybd layer".
func TestReadErrorIsNotAFormat(t *testing.T) {
	refused := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	b, err := os.ReadFile(fixture.Oracle(t, "d/l1.lsmt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int64{0, 600, int64(len(b)) - 100} { // first block, LSMT header, trailer
		_, err := layerfile.OpenLayer(&failAfter{b: b, n: n, err: refused}, int64(len(b)), layerfile.Options{Name: "blob"})
		if !errors.Is(err, refused) || strings.Contains(err.Error(), "not an overlaybd layer") || !strings.Contains(err.Error(), "blob") {
			t.Errorf("reads failing past %d: %v", n, err)
		}
	}
}
