package image

// Interop audit: whole layer blobs in the shapes real producers write
// (overlaybd tools, ACI's converter and snapshotter), opened through Open.
// Formats: docs/format-*.md and docs/image-config.md, sections cited per case.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/tarwrap"
	"github.com/obdfs/obdfs/zfile"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// region is data written at a virtual offset.
type region struct {
	off  int64
	data []byte
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// newRW makes an append-only RW layer in dir with the writes and discards.
func newRW(t testing.TB, dir string, o lsmt.CreateOptions, writes []region, discards [][2]int64) *lsmt.RWFile {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rw, err := lsmt.Create(filepath.Join(dir, "writable_data"), filepath.Join(dir, "writable_index"), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range writes {
		if _, err := rw.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range discards {
		if err := rw.Discard(d[0], d[1]); err != nil {
			t.Fatal(err)
		}
	}
	return rw
}

// seal turns the RW layer's data file into overlaybd.sealed in place, as
// `overlaybd-commit --seal` does (docs/format-lsmt.md §5.3): header kept (0x03), index
// appended at EOF padded to 512 bytes with garbage records not counted in
// index_size, trailer 0x06 with the data header's uuid/parent/vsize.
func seal(t testing.TB, rw *lsmt.RWFile, dst string) {
	t.Helper()
	recs := rw.Index()
	dp := rw.DataPath()
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	df, err := os.OpenFile(dp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	st, _ := df.Stat()
	var idx []byte
	for _, r := range recs {
		var e [lsmt.RecordSize]byte
		r.Encode(e[:])
		idx = append(idx, e[:]...)
	}
	for i := 0; len(idx)%512 != 0; i++ {
		idx = append(idx, byte(0x5A^i))
	}
	hb := make([]byte, lsmt.HeaderSize)
	df.ReadAt(hb, 0)
	tr, _ := lsmt.ParseHeader(hb)
	if tr.Flags != 0x03 {
		t.Fatalf("data header flags %#x", tr.Flags)
	}
	tr.Flags = lsmt.FlagData | lsmt.FlagSealed
	tr.IndexOffset = uint64(st.Size())
	tr.IndexSize = uint64(len(recs))
	tb, _ := tr.MarshalBinary()
	if _, err := df.WriteAt(append(idx, tb...), st.Size()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dp, dst); err != nil {
		t.Fatal(err)
	}
}

// commitBytes commits rw like overlaybd-commit, optionally -z and -t with
// the header overwritten (what ACI's converter pushes, docs/format-zfile.md
// §7, docs/format-tar.md §2), through the same write pipeline as obdfs
// commit (layerfile).
func commitBytes(t testing.TB, rw *lsmt.RWFile, a lsmt.CommitArgs, z, tarred bool) []byte {
	t.Helper()
	o := layerfile.WriteOptions{Tar: tarred}
	if z {
		o.ZFile = &zfile.WriterOptions{}
	}
	p := filepath.Join(t.TempDir(), "commit")
	if err := layerfile.Commit(p, rw, a, o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeConfig(t testing.TB, dir string, c any) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, filepath.Join(dir, "config.v1.json"), b)
}

// checkRegions reads every region (and 512 bytes around it) through s.
func checkRegions(t testing.TB, s *Stack, base func(off int64) byte, regs []region) {
	t.Helper()
	for _, r := range regs {
		start := max(0, r.off-512)
		got := make([]byte, int64(len(r.data))+1024)
		n, err := s.ReadAt(got, start)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for i := range n {
			a := start + int64(i)
			want := base(a)
			if a >= r.off && a < r.off+int64(len(r.data)) {
				want = r.data[a-r.off]
			}
			if got[i] != want {
				t.Fatalf("byte %d = %#x, want %#x", a, got[i], want)
			}
		}
	}
}

func zeroBase(int64) byte { return 0 }

// docs/format-lsmt.md §5.3 + docs/image-config.md §2: a sealed RW layer opens
// as a lower, alone, from a config
// `dir` holding only overlaybd.sealed, and below a committed layer whose
// parent is the sealed layer's (kept) uuid.
func TestSealedLayerThroughImage(t *testing.T) {
	dir := t.TempDir()
	const vsize = 32 << 20
	writes := []region{{0, fill(1, 8192)}, {4096, fill(2, 1024)}, {1 << 20, fill(3, 65536)}, {1<<20 + 512, fill(4, 512)}, {vsize - 4096, fill(5, 4096)}}
	rw := newRW(t, filepath.Join(dir, "rw"), lsmt.CreateOptions{VirtualSize: vsize, UUID: "0bd0000a-0000-4000-8000-00000000000a"}, writes, [][2]int64{{1<<20 + 4096, 8192}})
	want := make([]byte, vsize)
	if _, err := rw.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	layerDir := filepath.Join(dir, "snapshots", "7", "fs")
	os.MkdirAll(layerDir, 0o755)
	sealed := filepath.Join(layerDir, "overlaybd.sealed")
	seal(t, rw, sealed)

	// An upper committed layer, child of the sealed one.
	up := newRW(t, filepath.Join(dir, "up"), lsmt.CreateOptions{}, []region{{2 << 20, fill(9, 4096)}}, nil)
	upper := writeFile(t, filepath.Join(dir, "up.commit"),
		commitBytes(t, up, lsmt.CommitArgs{UUID: "0bd0000b-0000-4000-8000-00000000000b", ParentUUID: "0BD0000A-0000-4000-8000-00000000000A"}, true, true))
	up.Close()

	for _, tc := range []struct {
		name, spec string
		top        bool
	}{
		{"file", sealed, false},
		{"config dir", writeConfig(t, filepath.Join(dir, "c1"), Config{Lowers: []LowerConfig{{Dir: layerDir}}}), false},
		{"dir under a committed layer", writeConfig(t, filepath.Join(dir, "c2"), Config{Lowers: []LowerConfig{{Dir: layerDir}, {File: upper}}}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.spec, Options{Cache: blockcache.New(4 << 20)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			exp := want
			if tc.top {
				exp = bytes.Clone(want)
				copy(exp[2<<20:], fill(9, 4096))
			}
			if s.Size() != vsize {
				t.Fatalf("size %d", s.Size())
			}
			got := make([]byte, vsize)
			if _, err := s.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, exp) {
				t.Fatalf("differs at byte %d", testlayer.FirstDiff(got, exp))
			}
			if k := s.Layers()[0].Kind; k != "lsmt" {
				t.Fatalf("kind %q", k)
			}
		})
	}
}

// realBaseLayer is ext4_64 (testdata/README.md), the 2021 base ZFile.
func realBaseLayer(t testing.TB) []byte {
	t.Helper()
	f, err := os.Open(fixture.Path(t, "real/ext4_64.tar.gz"))
	if err != nil {
		t.Fatalf("real fixture: %v", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// aciBaseBlob wraps the base layer like ACI's uploadBaseLayer
// (docs/format-tar.md §3): Go
// archive/tar, overlaybd.commit, mode 0444, closed.
func aciBaseBlob(t testing.TB, base []byte) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: "overlaybd.commit", Mode: 0o444, Size: int64(len(base)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(base)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func ext4Magic(t testing.TB, s *Stack) {
	t.Helper()
	sb := make([]byte, 2)
	if _, err := s.ReadAt(sb, 1024+0x38); err != nil || sb[0] != 0x53 || sb[1] != 0xEF {
		t.Fatalf("ext4 magic: % x, %v", sb, err)
	}
}

// docs/image-config.md §3.1: ACI's base-layer blob (Go USTAR around the 2021 ZFile) has a
// known digest and opens; so does the same with 1024 extra zero bytes
// (docs/format-tar.md §3: ACI closes an extra tar writer).
func TestACIBaseLayerBlob(t *testing.T) {
	blob := aciBaseBlob(t, realBaseLayer(t))
	sum := sha256.Sum256(blob)
	if len(blob) != 4739584 || hex.EncodeToString(sum[:]) != "a8b5fca80efae55088290f3da8110d7742de55c2a378d5ab53226a483f390e21" {
		t.Fatalf("blob %d bytes sha256 %x: not ACI's base layer", len(blob), sum)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		b    []byte
	}{{"as pushed", blob}, {"plus 1024 zero bytes", append(bytes.Clone(blob), make([]byte, 1024)...)}} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, filepath.Join(dir, tc.name, "overlaybd.commit"), tc.b)
			s, err := Open(p, Options{Cache: blockcache.New(8 << 20)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Size() != 64<<30 || s.Layers()[0].Kind != "tar+zfile+lsmt" {
				t.Fatalf("size %d kind %q", s.Size(), s.Layers()[0].Kind)
			}
			if l := s.Lowers()[0]; l.File.UUID() != "C02FB491-B4D4-4904-8684-A014D032AF78" || l.ZFile.Info().UsedTrailer != true {
				t.Fatalf("uuid %s", l.File.UUID())
			}
			ext4Magic(t, s)
		})
	}
}

// docs/image-config.md §3: the converter's layer blob — overlaybd PAX tar (data at
// 1536), ZFile with the 0x1B header and digest, LSMT of 64 GiB with a padded
// index and uuid/parent from chain IDs — stacked on ACI's base-layer blob
// through a config, as the snapshotter would write it.
func TestACIConverterBlob(t *testing.T) {
	const vsize = 64 << 30
	dir := t.TempDir()
	writes := []region{{8 << 20, fill(0xAB, 12288)}, {vsize - 8192, fill(0xCD, 8192)}, {3<<30 + 512, fill(0xEF, 1536)}}
	rw := newRW(t, filepath.Join(dir, "rw"), lsmt.CreateOptions{VirtualSize: vsize}, writes, [][2]int64{{16 << 20, 1 << 20}})
	// chainIDtoUUID: the first 32 hex digits, lowercase on the command line.
	blob := commitBytes(t, rw, lsmt.CommitArgs{UUID: "01bb4fce-3eb1-b56b-05ad-f99504dafd31"}, true, true)
	rw.Close()

	// The shape, byte for byte.
	if string(blob[1024:1040]) != "overlaybd.commit" || blob[156] != 'x' || blob[1024+156] != '0' || !bytes.Contains(blob[512:1024], []byte(" size=")) {
		t.Fatalf("tar form: %q %q", blob[1024:1040], blob[512:530])
	}
	zh := blob[1536:]
	if binary.LittleEndian.Uint64(zh[32:]) != 0x1B || binary.LittleEndian.Uint32(zh[28:]) == 0 {
		t.Fatalf("ZFile header flags %#x digest %#x", binary.LittleEndian.Uint64(zh[32:]), binary.LittleEndian.Uint32(zh[28:]))
	}
	p := writeFile(t, filepath.Join(dir, "layer", "overlaybd.commit"), blob)
	s, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := s.Lowers()[0]
	if h := l.File.Header(); h.IndexSize%256 != 0 || h.VirtualSize != vsize || l.File.UUID() != "01BB4FCE-3EB1-B56B-05AD-F99504DAFD31" || l.Kind != "tar+zfile+lsmt" || l.ZFile.Info().UsedTrailer {
		t.Fatalf("layer %s: index_size %d vsize %d uuid %s", l.Kind, h.IndexSize, h.VirtualSize, l.File.UUID())
	}
	checkRegions(t, s, zeroBase, writes)
	s.Close()

	// Stacked on the base-layer blob, with an RW upper of vsize 0.
	base := writeFile(t, filepath.Join(dir, "base", "overlaybd.commit"), aciBaseBlob(t, realBaseLayer(t)))
	cfg := writeConfig(t, dir, Config{
		Lowers: []LowerConfig{{Dir: filepath.Dir(base)}, {Dir: filepath.Dir(p)}},
		Upper:  UpperConfig{Data: filepath.Join(dir, "up", "writable_data"), Index: filepath.Join(dir, "up", "writable_index")},
	})
	newRW(t, filepath.Join(dir, "up"), lsmt.CreateOptions{}, nil, nil).Close()
	s, err = Open(cfg, Options{Cache: blockcache.New(8 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != vsize {
		t.Fatalf("size %d", s.Size())
	}
	ext4Magic(t, s)
	// The converted layer's discard hides the base layer's data there.
	z := make([]byte, 1<<20)
	if _, err := s.ReadAt(z, 16<<20); err != nil || !bytes.Equal(z, make([]byte, 1<<20)) {
		t.Fatalf("discarded range: %v", err)
	}
	for _, w := range writes {
		got := make([]byte, len(w.data))
		if _, err := s.ReadAt(got, w.off); err != nil || !bytes.Equal(got, w.data) {
			t.Fatalf("region at %d: %v", w.off, err)
		}
	}
	if n, err := s.ReadAt(make([]byte, 4096), vsize-1000); n != 1000 || err != io.EOF {
		t.Fatalf("read across the end: %d %v", n, err)
	}
}

// docs/format-lsmt.md §7.3: 255 layers open, 256 and a 300-lower config are
// refused clearly.
func TestLayerCountLimits(t *testing.T) {
	dir := t.TempDir()
	rw := newRW(t, filepath.Join(dir, "rw"), lsmt.CreateOptions{VirtualSize: 1 << 20}, []region{{0, fill(7, 512)}}, nil)
	layer := writeFile(t, filepath.Join(dir, "l.commit"), commitBytes(t, rw, lsmt.CommitArgs{}, true, true))
	rw.Close()
	spec := func(n int) string { return strings.TrimSuffix(strings.Repeat(layer+",", n), ",") }
	s, err := Open(spec(255), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Layers()) != 255 {
		t.Fatalf("%d layers", len(s.Layers()))
	}
	b := make([]byte, 512)
	if _, err := s.ReadAt(b, 0); err != nil || b[0] != 7 {
		t.Fatalf("read: %v", err)
	}
	s.Close()
	if _, err := Open(spec(256), Options{}); err == nil || !strings.Contains(err.Error(), "256") || !strings.Contains(err.Error(), "255") {
		t.Fatalf("256 layers: %v", err)
	}
	lowers := make([]LowerConfig, 300)
	for i := range lowers {
		lowers[i] = LowerConfig{File: layer}
	}
	cfg := writeConfig(t, dir, Config{Lowers: lowers})
	if _, err := Open(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "300") || !strings.Contains(err.Error(), cfg) {
		t.Fatalf("300 lowers: %v", err)
	}
}

// Bad blobs fail with an error naming the file, never a panic or data.
func TestBadBlobs(t *testing.T) {
	dir := t.TempDir()
	rw := newRW(t, filepath.Join(dir, "rw"), lsmt.CreateOptions{VirtualSize: 1 << 20}, []region{{0, fill(7, 8192)}}, nil)
	var lb bytes.Buffer
	if _, err := lsmt.Commit(&lb, rw, lsmt.CommitArgs{}); err != nil {
		t.Fatal(err)
	}
	zgood := commitBytes(t, rw, lsmt.CommitArgs{}, true, false)
	rw.Close()

	// An LSMT whose trailer index_offset lies beyond its end, inside a
	// well-formed ZFile and tar.
	l := bytes.Clone(lb.Bytes())
	binary.LittleEndian.PutUint64(l[len(l)-lsmt.HeaderSize+32:], uint64(len(l))+1<<20)
	badPath := filepath.Join(dir, "bad-index-offset.tar")
	if err := layerfile.Copy(badPath, bytes.NewReader(l), layerfile.WriteOptions{ZFile: &zfile.WriterOptions{}, Tar: true}); err != nil {
		t.Fatal(err)
	}
	tb, err := os.ReadFile(badPath)
	if err != nil {
		t.Fatal(err)
	}

	// The PAX record claims size bytes; the real member is zgood.
	paxSize := func(size int) []byte {
		b := testlayer.TarWrap(zgood, 0o644)
		return append(tarwrap.Header(int64(size), 0o644), b[len(tarwrap.Header(0, 0o644)):]...)
	}
	// Only the ZFile trailer cut off: a 0x1B header does not need it (docs/format-zfile.md §8),
	// so this opens and reads right, as in overlaybd.
	p := writeFile(t, filepath.Join(dir, "cut-trailer"), paxSize(len(zgood)-512))
	if s, err := Open(p, Options{}); err != nil {
		t.Fatalf("ZFile trailer cut off by the PAX size: %v", err)
	} else {
		b := make([]byte, 8192)
		if _, err := s.ReadAt(b, 0); err != nil || !bytes.Equal(b, fill(7, 8192)) {
			t.Fatalf("read: %v", err)
		}
		s.Close()
	}
	tests := []struct {
		name, want string
		b          []byte
	}{
		{"lsmt index_offset beyond EOF", "trailer.index_offset", tb},
		{"PAX size past the blob", "does not fit", paxSize(len(zgood) + 3000)},
		{"PAX size cuts the ZFile index", "index", paxSize(700)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, filepath.Join(dir, tc.name), tc.b)
			s, err := Open(p, Options{})
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name the file and %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}
