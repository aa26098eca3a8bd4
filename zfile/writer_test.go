package zfile

import (
	"bytes"
	"testing"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// TestWriterMatchesOverlaybd: compressing a/base.lsmt with LZ4 and 4 KiB
// blocks gives exactly overlaybd-zfile's output (fixture b/base.lz4.tool.zfile),
// and FinalHeader gives overlaybd-commit -z's header (b/base.lz4.zfile).
func TestWriterMatchesOverlaybd(t *testing.T) {
	src := readFixture(t, "oracle/a/base.lsmt")
	tool := readFixture(t, "oracle/b/base.lz4.tool.zfile")
	commit := readFixture(t, "oracle/b/base.lz4.zfile")
	for _, conc := range []int{1, 3} {
		var out bytes.Buffer
		zw, err := NewWriter(&out, WriterOptions{Concurrency: conc})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := zw.Write(src); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		got := out.Bytes()
		if !bytes.Equal(got[:512], tool[:512]) {
			t.Errorf("conc %d: initial header differs from overlaybd-zfile's", conc)
		}
		if !bytes.Equal(got, tool) {
			t.Errorf("conc %d: output (%d bytes) differs from overlaybd-zfile's (%d bytes) at byte %d", conc, len(got), len(tool), testlayer.FirstDiff(got, tool))
		}
		if fh := zw.FinalHeader(); !bytes.Equal(fh, commit[:512]) {
			t.Errorf("conc %d: FinalHeader differs from overlaybd-commit's header at byte %d", conc, testlayer.FirstDiff(fh, commit[:512]))
		}
		if zw.Size() != int64(len(got)) {
			t.Errorf("Size %d, wrote %d", zw.Size(), len(got))
		}
	}
}
