package lsmt

import (
	testdata "github.com/obdfs/obdfs/internal/fixture"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/obdfs/obdfs/internal/testlayer"
)

var fixtureDir = testdata.OracleDir()

// Expected content sums from the fixtures' README.
const (
	sumL1    = "3a8114c638a5bd9111d70a534daf9e37128b775614357a32ef389785f434d81f"
	sumL2    = "52ccb9cf3c44543e99df3ca93e2c5acb9b2cc6ca49505763fabc108c19bee8f0"
	sumL3    = "1a4f46de871efe56314c353cd3f692cfbdc5413a7e95f97d610761379b7fda20"
	sumL12   = "8d604efb09c218d305275b75b9796e1995ed93b54cad0d862cb134ac5b4dbf24"
	sumL123  = "b2315973658f86ec78a1431df439b451b12dd0bad74a39dfd3de10087d63b4e7"
	sumL3Com = "1e8825009b0dd2d8eddfb6cda755c2dd21e8f421939ff832257adc31a3d072b7" // file d/l3.lsmt
)

func fixture(t testing.TB, rel string) string {
	t.Helper()
	return testdata.Oracle(t, rel)
}

func openFixture(t testing.TB, rel string) *File {
	t.Helper()
	f, err := Open(fixture(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func TestFixtureHeaders(t *testing.T) {
	f := openFixture(t, "a/base.lsmt")
	h := f.Header()
	if h.IndexOffset != 852480 || h.IndexSize != 256 || f.VirtualSize() != 64<<20 || h.Flags != 6 || f.FirstHeader().Flags != 7 {
		t.Fatalf("trailer: %+v", h)
	}
	if f.UUID() != "0BD00001-0000-4000-8000-000000000001" || f.ParentUUID() != nullUUID {
		t.Fatalf("uuids %s %s", f.UUID(), f.ParentUUID())
	}
	want := []Record{
		{0, 512, 8, false, 0}, {2048, 512, 520, false, 0}, {2560, 32, 1032, true, 0}, {2592, 480, 1032, false, 0},
		{4096, 16, 1512, false, 0}, {16385, 9, 1528, false, 0}, {129024, 128, 1537, false, 0},
	}
	got := f.Index()
	if len(got) != len(want) {
		t.Fatalf("index %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("index[%d] = %v want %v", i, got[i], want[i])
		}
	}
	l2 := openFixture(t, "d/l2.lsmt")
	if h2 := l2.Header(); h2.Tag() != "fixture layer 2" {
		t.Fatalf("l2 tag %q", h2.Tag())
	}
	lowers := []*File{openFixture(t, "d/l1.lsmt"), l2, openFixture(t, "d/l3.lsmt")}
	if err := VerifyOrder(lowers); err != nil {
		t.Fatal(err)
	}
	if err := VerifyOrder([]*File{lowers[0], lowers[2]}); err == nil {
		t.Fatal("VerifyOrder accepted l1,l3")
	} else {
		t.Log(err)
	}
}

func TestFixtureStacks(t *testing.T) {
	raws := map[string]string{sumL1: "expected-base.raw.zst", sumL3: "expected-l3-alone.raw.zst", sumL123: "expected-stack.raw.zst"}
	tests := []struct {
		name   string
		lowers []string
		rw     bool
		want   string
	}{
		{"a-alone", []string{"a/base.lsmt"}, false, sumL1},
		{"d-l2-alone", []string{"d/l2.lsmt"}, false, sumL2},
		{"d-l3-alone", []string{"d/l3.lsmt"}, false, sumL3},
		{"d-l1+l2", []string{"d/l1.lsmt", "d/l2.lsmt"}, false, sumL12},
		{"d-l1+l2+l3", []string{"d/l1.lsmt", "d/l2.lsmt", "d/l3.lsmt"}, false, sumL123},
		{"e-alone", nil, true, sumL3},
		{"e-on-d", []string{"d/l1.lsmt", "d/l2.lsmt"}, true, sumL123},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lowers []*File
			for _, n := range tt.lowers {
				lowers = append(lowers, openFixture(t, n))
			}
			var upper *RWFile
			if tt.rw {
				d, x := testlayer.CopyRW(t, t.TempDir())
				var err error
				if upper, err = OpenRW(d, x); err != nil {
					t.Fatal(err)
				}
				defer upper.Close()
			}
			s, err := NewStack(lowers, upper)
			if err != nil {
				t.Fatal(err)
			}
			if s.Size() != 64<<20 {
				t.Fatalf("size %d", s.Size())
			}
			got := testlayer.ReadAll(t, s, s.Size())
			if g := sum(got); g != tt.want {
				if raw, ok := raws[tt.want]; ok {
					exp := testlayer.ExpectedDisk(t, raw)
					t.Fatalf("sha256 %s, want %s; first difference at byte %d", g, tt.want, testlayer.FirstDiff(got, exp))
				}
				t.Fatalf("sha256 %s, want %s", g, tt.want)
			}
			if len(lowers) == 1 && upper == nil { // the File alone is a disk too
				if g := sum(testlayer.ReadAll(t, lowers[0], lowers[0].VirtualSize())); g != tt.want {
					t.Fatalf("File.ReadAt sha256 %s", g)
				}
			}
			if upper != nil && len(lowers) == 0 {
				if g := sum(testlayer.ReadAll(t, upper, upper.VirtualSize())); g != tt.want {
					t.Fatalf("RWFile.ReadAt sha256 %s", g)
				}
			}
		})
	}
}

// Unaligned reads at random offsets against the expected content, incl.
// reads crossing the end.
func TestFixtureUnalignedReads(t *testing.T) {
	exp := testlayer.ExpectedDisk(t, "expected-stack.raw.zst")
	s, err := NewStack([]*File{openFixture(t, "d/l1.lsmt"), openFixture(t, "d/l2.lsmt"), openFixture(t, "d/l3.lsmt")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	hot := []int64{0, 0x20200, 0x118000, 0x800000, 0x800200, 0x2004000, 0x3F01000, 0x3FFF000, 64<<20 - 100}
	for i := 0; i < 3000; i++ {
		off := rng.Int64N(64 << 20)
		if i%3 == 0 {
			off = min(max(0, hot[rng.IntN(len(hot))]+rng.Int64N(2048)-1024), 64<<20-1)
		}
		n := rng.IntN(70000)
		p := make([]byte, n)
		got, err := s.ReadAt(p, off)
		wantN := int(min(int64(n), 64<<20-off))
		if got != wantN || (wantN < n) != (err == io.EOF) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", n, off, got, err)
		}
		if !bytes.Equal(p[:got], exp[off:off+int64(got)]) {
			t.Fatalf("ReadAt(len %d, off %d): first difference at +%d", n, off, testlayer.FirstDiff(p[:got], exp[off:]))
		}
	}
	if n, err := s.ReadAt(make([]byte, 10), 64<<20); n != 0 || err != io.EOF {
		t.Fatalf("read at end: %d %v", n, err)
	}
}

func TestCommitFixture(t *testing.T) {
	d, x := testlayer.CopyRW(t, t.TempDir())
	rw, err := OpenRW(d, x)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	var buf bytes.Buffer
	n, err := Commit(&buf, rw, CommitArgs{UUID: "0bd00003-0000-4000-8000-000000000003", ParentUUID: "0bd00002-0000-4000-8000-000000000002"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(fixture(t, "d/l3.lsmt"))
	if n != int64(buf.Len()) || sum(buf.Bytes()) != sumL3Com {
		t.Fatalf("commit output differs from d/l3.lsmt (%d vs %d bytes), first difference at %d", buf.Len(), len(want), testlayer.FirstDiff(buf.Bytes(), want))
	}
}
