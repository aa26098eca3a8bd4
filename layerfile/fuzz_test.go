package layerfile_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/zfile"
)

// FuzzOpen feeds Open any bytes: it returns a File or an error, never
// panics, and what it opens can be read.
func FuzzOpen(f *testing.F) {
	l3 := fixture.Read(f, "oracle/d/l3.lsmt")
	f.Add(l3)
	f.Add(fixture.Read(f, "oracle/e/l3.index"))
	// l3 as a tar-wrapped ZFile: every container at once.
	p := filepath.Join(f.TempDir(), "l3.tar")
	if err := layerfile.Copy(p, bytes.NewReader(l3), layerfile.WriteOptions{ZFile: &zfile.WriterOptions{}, Tar: true}); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		lf, err := layerfile.Open(bytes.NewReader(b), int64(len(b)), layerfile.Options{Name: "fuzz"})
		if err != nil {
			return
		}
		_ = lf.Kind.String()
		buf := make([]byte, 64<<10)
		if lf.ZFile != nil {
			lf.ZFile.ReadAt(buf, 0)
		}
		if lf.LSMT != nil {
			lf.LSMT.ReadAt(buf, 0)
			lf.LSMT.ReadAt(buf, max(0, lf.LSMT.Size()-int64(len(buf))))
		}
		if (lf.LSMT != nil) != lf.Kind.Content.ReadOnly() {
			t.Fatalf("content %v but LSMT opened: %v", lf.Kind.Content, lf.LSMT != nil)
		}
		lf.Close()
	})
}
