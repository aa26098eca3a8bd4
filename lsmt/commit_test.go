package lsmt

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// TestCommitRecordSplit checks the index records Commit writes for runs
// longer than one record (8 MiB) against overlaybd-commit's rule
// (docs/format-lsmt.md §5.2): each record is copied in 64-sector steps from
// its own start, then neighbours fold while the sum stays below MaxLength.
// The wanted lengths are worked out by hand; folding whole records instead
// gives the "old" lengths noted per case.
func TestCommitRecordSplit(t *testing.T) {
	const mib = 1 << 20
	type op struct {
		off, n  int64 // bytes
		discard bool
	}
	// {offset, length, moffset, zeroed} in sectors; moffset of data
	// records counts from the first data sector (8).
	type rec struct {
		off, n, moff uint64
		zeroed       bool
	}
	tests := []struct {
		name string
		ops  []op
		want []rec
	}{{
		// 12 MiB of 1 MiB writes: 24576 sectors = 16320 + 8256
		// (whole-record folding: 7×2048 = 14336, 10240).
		name: "1MiB writes",
		ops: func() (o []op) {
			for i := range int64(12) {
				o = append(o, op{off: i * mib, n: mib})
			}
			return o
		}(),
		want: []rec{{0, 16320, 8, false}, {16320, 8256, 8 + 16320, false}},
	}, {
		// 100 sectors, then 9 MiB (logged as 8192+8192+2048 at the
		// 4 MiB write split): 64+36, then 254 more steps of 64 fit below
		// 16383 (whole-record folding: 8292, 10240).
		name: "odd head",
		ops:  []op{{off: 0, n: 100 * 512}, {off: 100 * 512, n: 9 * mib}},
		want: []rec{{0, 16356, 8, false}, {16356, 2176, 8 + 16356, false}},
	}, {
		// A 9 MiB discard is logged as 16383 + 2049 zeroed sectors;
		// zeroed records are not split and these two cannot fold.
		name: "discard",
		ops:  []op{{off: 0, n: mib}, {off: mib, n: 9 * mib, discard: true}},
		want: []rec{{0, 2048, 8, false}, {2048, 16383, 8 + 2048, true}, {2048 + 16383, 2049, 8 + 2048, true}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			rw, err := Create(filepath.Join(dir, "d"), filepath.Join(dir, "x"), CreateOptions{VirtualSize: 16 * mib})
			if err != nil {
				t.Fatal(err)
			}
			defer rw.Close()
			model := make([]byte, 16*mib)
			for i, o := range tt.ops {
				if o.discard {
					if err := rw.Discard(o.off, o.n); err != nil {
						t.Fatal(err)
					}
					clear(model[o.off : o.off+o.n])
					continue
				}
				p := testlayer.Random(uint64(i+1), int(o.n))
				if _, err := rw.WriteAt(p, o.off); err != nil {
					t.Fatal(err)
				}
				copy(model[o.off:], p)
			}
			var out bytes.Buffer
			if _, err := Commit(&out, rw, CommitArgs{}); err != nil {
				t.Fatal(err)
			}
			f := openBytes(t, out.Bytes(), "commit")
			got, _ := f.commitIndex()
			if len(got) != len(tt.want) {
				t.Fatalf("records %v, want %v", got, tt.want)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Offset != w.off || g.Length != w.n || g.MOffset != w.moff || g.Zeroed != w.zeroed {
					t.Fatalf("record %d = %+v, want %+v (all %v)", i, g, w, got)
				}
			}
			checkView(t, f, f.VirtualSize(), model)
		})
	}
}
