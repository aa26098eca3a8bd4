package lsmt

// Interop audit: shapes real overlaybd files can have that the oracle
// fixtures do not show, built byte by byte from the format description
// (docs/format-lsmt.md, sections cited per case).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// rawLayer describes an RO layer file to be written byte for byte. Header
// fields are copied as given (no normalisation), so a test can put any
// case, flag or version on disk.
type rawLayer struct {
	hdrFlags, trlFlags uint32
	vsize              uint64
	uuid, parent       string
	tag                []byte
	version, subVer    uint8
	data               []byte   // file bytes from 4096 up to index_offset (a multiple of 512)
	recs               []Record // encoded as given, tags included
	pad                []byte   // bytes between the records and the trailer
	indexSize          int64    // trailer index_size; -1 = len(recs)
}

func (l rawLayer) header(flags uint32) []byte {
	h := Header{Magic0: Magic0, Magic1: Magic1, Size: HeaderStructSz, Flags: flags,
		VirtualSize: l.vsize, Version: l.version, SubVersion: l.subVer}
	copy(h.UUID[:], l.uuid)
	copy(h.ParentUUID[:], l.parent)
	copy(h.UserTag[:], l.tag)
	b, _ := h.MarshalBinary()
	return b
}

func (l rawLayer) bytes() []byte {
	var b bytes.Buffer
	b.Write(l.header(l.hdrFlags))
	b.Write(l.data)
	idxOff := b.Len()
	for _, r := range l.recs {
		var e [RecordSize]byte
		r.Encode(e[:])
		b.Write(e[:])
	}
	b.Write(l.pad)
	t := l.header(l.trlFlags)
	binary.LittleEndian.PutUint64(t[32:], uint64(idxOff))
	n := l.indexSize
	if n < 0 {
		n = int64(len(l.recs))
	}
	binary.LittleEndian.PutUint64(t[40:], uint64(n))
	b.Write(t)
	return b.Bytes()
}

// compactLayer lays out data records like overlaybd-commit (docs/format-lsmt.md §5.1): data
// packed from sector 8 in index order, zeroed records at the data cursor.
// Each data record's sectors are filled with a pattern; want gets the
// layer's own view.
func compactLayer(vsize uint64, recs []Record, seed uint64) (rawLayer, []byte) {
	want := make([]byte, vsize)
	var data []byte
	cursor := uint64(dataStart)
	rng := rand.New(rand.NewPCG(seed, seed))
	out := make([]Record, len(recs))
	for i, r := range recs {
		r.MOffset = cursor
		if !r.Zeroed {
			p := make([]byte, r.Length*SectorSize)
			for j := 0; j < len(p); j += 8 { // never a 0 byte: zeros mean "hole"
				binary.LittleEndian.PutUint64(p[j:], rng.Uint64()|0x0101010101010101)
			}
			data = append(data, p...)
			copy(want[r.Offset*SectorSize:], p)
			cursor += r.Length
		}
		out[i] = r
	}
	return rawLayer{
		hdrFlags: FlagHeader | FlagData | FlagSealed, trlFlags: FlagData | FlagSealed,
		vsize: vsize, uuid: nullUUID, parent: nullUUID, version: 1, subVer: 1,
		data: data, recs: out, indexSize: -1,
	}, want
}

func padRecords(n int) []byte {
	var b []byte
	for range n {
		var e [RecordSize]byte
		invalidRecord.Encode(e[:])
		b = append(b, e[:]...)
	}
	return b
}

func openBytes(t testing.TB, b []byte, name string) *File {
	t.Helper()
	f, err := NewFile(bytes.NewReader(b), int64(len(b)), name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// checkView compares a whole disk with want, aligned and not.
func checkView(t testing.TB, r io.ReaderAt, size int64, want []byte) {
	t.Helper()
	if int64(len(want)) != size {
		t.Fatalf("size %d, want %d", size, len(want))
	}
	got := testlayer.ReadAll(t, r, size)
	if !bytes.Equal(got, want) {
		t.Fatalf("content differs at byte %d", testlayer.FirstDiff(got, want))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 60 {
		off := rng.Int64N(size)
		p := make([]byte, rng.IntN(20000)+1)
		n, err := r.ReadAt(p, off)
		if n != int(min(int64(len(p)), size-off)) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", len(p), off, n, err)
		}
		if !bytes.Equal(p[:n], want[off:off+int64(n)]) {
			t.Fatalf("ReadAt(%d, %d): differs at +%d", len(p), off, testlayer.FirstDiff(p[:n], want[off:]))
		}
	}
}

// docs/format-lsmt.md §5.3: a sealed append-only RW data file. The header stays the RW header
// (0x03), every byte ever written stays (overwritten garbage included), the
// sorted index is appended at EOF padded to 512 bytes with *unspecified*
// padding records not counted in index_size, then a 0x06 trailer keeping
// the data header's uuid, parent and vsize.
func TestSealedAppendLayer(t *testing.T) {
	dir := t.TempDir()
	dp, xp := filepath.Join(dir, "writable_data"), filepath.Join(dir, "writable_index")
	const vsize = 8 << 20
	rw, err := Create(dp, xp, CreateOptions{VirtualSize: vsize, ParentUUID: "0bd00001-0000-4000-8000-000000000001"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 60 { // overlapping writes leave garbage in the data file
		off := rng.Int64N(vsize/SectorSize-300) * SectorSize
		p := make([]byte, (rng.Int64N(256)+1)*SectorSize)
		for j := range p {
			p[j] = byte(i + 1)
		}
		if _, err := rw.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			if err := rw.Discard(rng.Int64N(vsize/SectorSize-100)*SectorSize, (rng.Int64N(64)+1)*SectorSize); err != nil {
				t.Fatal(err)
			}
		}
	}
	rw.WriteAt(bytes.Repeat([]byte{0xEE}, 4096), vsize-4096) // last sectors mapped
	want := testlayer.ReadAll(t, rw, vsize)
	recs := rw.Index()
	uuid := rw.UUID()
	rw.Close()

	// Seal in place, as close_seal does.
	df, err := os.OpenFile(dp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := df.Stat()
	idxOff := st.Size()
	var idx bytes.Buffer
	for _, r := range recs {
		var e [RecordSize]byte
		r.Encode(e[:])
		idx.Write(e[:])
	}
	for idx.Len()%512 != 0 { // garbage padding (uninitialised buffer upstream)
		idx.WriteByte(byte(rng.Uint32()))
	}
	var hb [HeaderSize]byte
	df.ReadAt(hb[:], 0)
	tr, _ := ParseHeader(hb[:])
	if tr.Flags != 0x03 {
		t.Fatalf("RW data header flags %#x", tr.Flags)
	}
	tr.Flags = FlagData | FlagSealed
	tr.IndexOffset = uint64(idxOff)
	tr.IndexSize = uint64(len(recs)) // exact count, padding not included
	tb, _ := tr.MarshalBinary()
	df.WriteAt(append(idx.Bytes(), tb...), idxOff)
	df.Close()
	sealed := filepath.Join(dir, "overlaybd.sealed")
	if err := os.Rename(dp, sealed); err != nil {
		t.Fatal(err)
	}

	f, err := Open(sealed)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.FirstHeader().Flags != 0x03 || f.Header().Flags != 0x06 || f.UUID() != uuid ||
		f.ParentUUID() != "0BD00001-0000-4000-8000-000000000001" || f.VirtualSize() != vsize {
		t.Fatalf("header %#x trailer %#x uuid %s parent %s vsize %d", f.FirstHeader().Flags, f.Header().Flags, f.UUID(), f.ParentUUID(), f.VirtualSize())
	}
	checkView(t, f, vsize, want)

	// --commit_sealed: the sealed file recommits to the same content.
	var out bytes.Buffer
	if _, err := Commit(&out, f, CommitArgs{}); err != nil {
		t.Fatal(err)
	}
	c := openBytes(t, out.Bytes(), "recommitted")
	checkView(t, c, vsize, want)
}

// docs/format-lsmt.md §5.3 for a sparse layer: header 0x13, data region is 4096+vsize (here
// the real 64 GiB, a sparse temp file), index at 4096+vsize, trailer 0x16.
func TestSealedSparseLayer(t *testing.T) {
	const vsize = 64 << 30
	p := filepath.Join(t.TempDir(), "overlaybd.sealed")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	l := rawLayer{vsize: vsize, uuid: "A1B2C3D4-0000-4000-8000-00000000000A", parent: nullUUID, version: 1, subVer: 1}
	f.WriteAt(l.header(FlagHeader|FlagData|FlagSparse), 0)
	writes := []struct{ off, n int64 }{{0, 4096}, {1 << 20, 8192}, {40 << 30, 512}, {vsize - 4096, 4096}}
	var recs []Record
	for i, w := range writes {
		f.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, int(w.n)), HeaderSize+w.off)
		recs = append(recs, Record{Offset: uint64(w.off) / SectorSize, Length: uint64(w.n) / SectorSize, MOffset: uint64(HeaderSize+w.off) / SectorSize})
	}
	var idx []byte
	for _, r := range recs {
		var e [RecordSize]byte
		r.Encode(e[:])
		idx = append(idx, e[:]...)
	}
	idx = append(idx, bytes.Repeat([]byte{0xA5}, 512-len(idx))...) // garbage padding
	tr := l.header(FlagData | FlagSealed | FlagSparse)
	binary.LittleEndian.PutUint64(tr[32:], HeaderSize+vsize)
	binary.LittleEndian.PutUint64(tr[40:], uint64(len(recs)))
	f.WriteAt(append(idx, tr...), HeaderSize+vsize)
	f.Close()

	lf, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if lf.Header().Flags != 0x16 || lf.FirstHeader().Flags != 0x13 || lf.VirtualSize() != vsize || lf.Header().IndexOffset != HeaderSize+vsize {
		t.Fatalf("trailer %+v", lf.Header())
	}
	for i, w := range writes {
		got := make([]byte, w.n+1024)
		start := max(0, w.off-512)
		n, err := lf.ReadAt(got, start)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for j := range n {
			a := start + int64(j)
			exp := byte(0)
			if a >= w.off && a < w.off+w.n {
				exp = byte(i + 1)
			}
			if got[j] != exp {
				t.Fatalf("write %d: byte %d = %d, want %d", i, a, got[j], exp)
			}
		}
	}
}

// docs/format-lsmt.md §3, §4: variants a real RO file can present, each read against the
// layer's own model.
func TestROVariants(t *testing.T) {
	const vsize = 9 << 20
	base := []Record{
		{Offset: 0, Length: 8}, {Offset: 8, Length: 120, Zeroed: true}, {Offset: 128, Length: MaxLength},
		{Offset: 17000, Length: 16}, {Offset: 17500, Length: 100, Zeroed: true},
	}
	tests := []struct {
		name string
		mut  func(l *rawLayer)
	}{
		{"as committed", func(l *rawLayer) { l.pad = padRecords(256 - len(l.recs)); l.indexSize = 256 }},
		// docs/format-lsmt.md §3.2: a flattened file may keep source layer numbers in the tag byte.
		{"non-zero tags", func(l *rawLayer) {
			for i := range l.recs {
				l.recs[i].Tag = uint8(3*i + 1)
			}
		}},
		// docs/format-lsmt.md §3.3 range check: a zeroed record may sit at moffset == index_offset/512.
		{"zeroed record at the data end", func(l *rawLayer) {
			l.recs = append(l.recs, Record{Offset: 18000, Length: 50, Zeroed: true, MOffset: uint64(HeaderSize+len(l.data)) / SectorSize})
		}},
		// docs/format-lsmt.md §4: index_size may count only part of the padding that follows.
		{"index_size counts part of the padding", func(l *rawLayer) { l.pad = padRecords(256 - len(l.recs)); l.indexSize = int64(len(l.recs)) + 100 }},
		{"index_size counts no padding", func(l *rawLayer) { l.pad = padRecords(256 - len(l.recs)) }},
		// docs/format-lsmt.md §2.3: parsing accepts lowercase.
		{"lowercase uuids", func(l *rawLayer) {
			l.uuid, l.parent = "c02fb491-b4d4-4904-8684-a014d032af78", "01bb4fce-3eb1-b56b-05ad-f99504dafd31"
		}},
		// docs/format-lsmt.md §2.1: a 256-byte tag has no NUL.
		{"user_tag of 256 bytes", func(l *rawLayer) { l.tag = bytes.Repeat([]byte("m"), UserTagSize) }},
		// docs/format-lsmt.md §2.1: version, sub_version and size are not checked.
		{"version 2.7", func(l *rawLayer) { l.version, l.subVer = 2, 7 }},
		{"version 0.0", func(l *rawLayer) { l.version, l.subVer = 0, 0 }},
		// docs/format-lsmt.md §2.2: bits 3 (gc_layer) and 5 (info_valid) are never read.
		{"flag bits 3 and 5", func(l *rawLayer) { l.hdrFlags |= 0x28; l.trlFlags |= 0x28 }},
		// docs/format-lsmt.md §3.1 padding records (invalid) interleaved with real ones.
		{"invalid records inside the index", func(l *rawLayer) {
			l.recs = append([]Record{invalidRecord}, append(l.recs[:2:2], append([]Record{invalidRecord}, l.recs[2:]...)...)...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, want := compactLayer(vsize, base, 9)
			tt.mut(&l)
			b := l.bytes()
			f := openBytes(t, b, "variant.lsmt")
			for _, r := range f.Index() {
				if r.Tag != 0 {
					t.Fatalf("tag %d kept on a normal layer: %v", r.Tag, r)
				}
			}
			if n := len(f.Index()); n < len(base) {
				t.Fatalf("%d records", n)
			}
			checkView(t, f, vsize, want)
			if h := f.Header(); tt.name == "user_tag of 256 bytes" && h.Tag() != strings.Repeat("m", 256) {
				t.Fatalf("tag %q", h.Tag())
			}
			// Stacked, the tags select files by position, never by the
			// stored byte.
			other, _ := compactLayer(vsize, []Record{{Offset: 18100, Length: 8}}, 10)
			s, err := NewStack([]*File{openBytes(t, other.bytes(), "other"), f}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := testlayer.ReadAll(t, s, vsize)
			if !bytes.Equal(got[:18100*SectorSize], want[:18100*SectorSize]) {
				t.Fatalf("stacked view differs at %d", testlayer.FirstDiff(got, want))
			}
		})
	}
}

// docs/format-lsmt.md §2.3: uuid strings may be lowercase; the parent chain must compare them
// without case.
func TestVerifyOrderLowercase(t *testing.T) {
	lo, _ := compactLayer(1<<20, []Record{{Offset: 0, Length: 8}}, 1)
	lo.uuid = "0bd00001-0000-4000-8000-000000000001"
	up, _ := compactLayer(1<<20, []Record{{Offset: 8, Length: 8}}, 2)
	up.uuid, up.parent = "0BD00002-0000-4000-8000-000000000002", "0BD00001-0000-4000-8000-000000000001"
	files := []*File{openBytes(t, lo.bytes(), "lo"), openBytes(t, up.bytes(), "up")}
	if err := VerifyOrder(files); err != nil {
		t.Fatalf("lowercase uuid below an uppercase parent: %v", err)
	}
	up.parent = "0BD00001-0000-4000-8000-000000000009"
	if err := VerifyOrder([]*File{files[0], openBytes(t, up.bytes(), "up")}); !errors.Is(err, ErrOrder) {
		t.Fatalf("broken chain: %v", err)
	}
}

// docs/format-lsmt.md §7.3: the size comes from the top-most lower with a non-zero vsize; a
// lower with vsize 0 still contributes its data.
func TestVSizeZeroLower(t *testing.T) {
	bottom, wantB := compactLayer(4<<20, []Record{{Offset: 0, Length: 16}}, 1)
	top, wantT := compactLayer(4<<20, []Record{{Offset: 8, Length: 16}}, 2)
	top.vsize = 0
	want := bytes.Clone(wantB)
	copy(want[8*SectorSize:], wantT[8*SectorSize:24*SectorSize])
	s, err := NewStack([]*File{openBytes(t, bottom.bytes(), "bottom"), openBytes(t, top.bytes(), "top")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkView(t, s, 4<<20, want)
	// Alone, a vsize-0 layer is an empty disk.
	f := openBytes(t, top.bytes(), "top")
	if n, err := f.ReadAt(make([]byte, 512), 0); f.Size() != 0 || n != 0 || err != io.EOF {
		t.Fatalf("vsize-0 layer alone: size %d, read %d %v", f.Size(), n, err)
	}
}

// docs/format-lsmt.md §7.2: the upper layer always wins, its zeroed records included.
func TestZeroedUpperHidesLower(t *testing.T) {
	lower, want := compactLayer(2<<20, []Record{{Offset: 0, Length: 64}}, 1)
	upper, _ := compactLayer(2<<20, []Record{{Offset: 10, Length: 5, Zeroed: true}, {Offset: 60, Length: 100, Zeroed: true}}, 2)
	clear(want[10*SectorSize : 15*SectorSize])
	clear(want[60*SectorSize : 64*SectorSize])
	s, err := NewStack([]*File{openBytes(t, lower.bytes(), "lower"), openBytes(t, upper.bytes(), "upper")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkView(t, s, 2<<20, want)
}

// docs/format-lsmt.md §6.1: an RW upper created with vsize 0 inherits the lowers' size, and
// both of its headers are rewritten on disk.
func TestRWUpperInheritsVSize(t *testing.T) {
	lower, want := compactLayer(3<<20, []Record{{Offset: 0, Length: 8}}, 1)
	dir := t.TempDir()
	dp, xp := filepath.Join(dir, "d"), filepath.Join(dir, "x")
	rw, err := Create(dp, xp, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStack([]*File{openBytes(t, lower.bytes(), "lower")}, rw)
	if err != nil {
		t.Fatal(err)
	}
	if s.Size() != 3<<20 || rw.VirtualSize() != 3<<20 {
		t.Fatalf("stack size %d, upper %d", s.Size(), rw.VirtualSize())
	}
	checkView(t, s, 3<<20, want)
	s.Close()
	for _, p := range []string{dp, xp} {
		b, _ := os.ReadFile(p)
		if v := binary.LittleEndian.Uint64(b[48:]); v != 3<<20 {
			t.Fatalf("%s: vsize on disk %d", p, v)
		}
	}
	rw2, err := OpenRW(dp, xp)
	if err != nil {
		t.Fatal(err)
	}
	defer rw2.Close()
	if rw2.VirtualSize() != 3<<20 {
		t.Fatalf("reopened vsize %d", rw2.VirtualSize())
	}
}

// docs/format-lsmt.md §1, §7.3: 255 read-only layers stack; 256 are refused clearly.
func TestMaxLayers(t *testing.T) {
	const vsize = 1 << 20
	files := make([]*File, 256)
	for i := range files {
		// Layer i owns sector i and also maps sector 1000 (top wins).
		l := rawLayer{hdrFlags: 7, trlFlags: 6, vsize: vsize, uuid: nullUUID, parent: nullUUID, version: 1, subVer: 1,
			data: append(bytes.Repeat([]byte{byte(i)}, 512), bytes.Repeat([]byte{byte(i)}, 512)...),
			recs: []Record{{Offset: uint64(i), Length: 1, MOffset: 8}, {Offset: 1000, Length: 1, MOffset: 9}}, indexSize: -1}
		files[i] = openBytes(t, l.bytes(), "layer")
	}
	s, err := NewStack(files[:255], nil)
	if err != nil {
		t.Fatal(err)
	}
	got := testlayer.ReadAll(t, s, vsize)
	for i := range 255 {
		if got[i*SectorSize] != byte(i) || got[i*SectorSize+511] != byte(i) {
			t.Fatalf("sector %d reads %d", i, got[i*SectorSize])
		}
	}
	if got[1000*SectorSize] != 254 {
		t.Fatalf("sector 1000 reads layer %d, want the top (254)", got[1000*SectorSize])
	}
	_, err = NewStack(files, nil)
	if !errors.Is(err, ErrTooManyLayers) || !strings.Contains(err.Error(), "256") || !strings.Contains(err.Error(), "255") {
		t.Fatalf("256 layers: %v", err)
	}
}

// docs/format-lsmt.md §7.1: reads at the very end of a disk whose size is not a multiple of
// 4096, with and without a writable upper; past the end is io.EOF. (A size
// that is not a multiple of 512 is refused at open: TestAbsurdVirtualSize.)
func TestReadsAtOddEnd(t *testing.T) {
	for _, vsize := range []int64{1<<20 + 1536, 1<<20 + 3584} {
		last := uint64(vsize-1) / SectorSize
		l, want := compactLayer(uint64(vsize+SectorSize), []Record{{Offset: last - 3, Length: 4}}, 5)
		l.vsize = uint64(vsize)
		want = want[:vsize]
		f := openBytes(t, l.bytes(), "odd")
		// An RW upper can only inherit a sector-multiple size (its
		// headers are rewritten with it, and writes are in sectors).
		var upper *RWFile
		if vsize%SectorSize == 0 {
			dir := t.TempDir()
			var err error
			if upper, err = Create(filepath.Join(dir, "d"), filepath.Join(dir, "x"), CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		s, err := NewStack([]*File{f}, upper)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []struct {
			name string
			r    io.ReaderAt
			size int64
		}{{"file", f, f.Size()}, {"stack", s, s.Size()}} {
			if d.size != vsize {
				t.Fatalf("%s: size %d", d.name, d.size)
			}
			for _, off := range []int64{vsize - 4096, vsize - 1537, vsize - 513, vsize - 100, vsize - 1} {
				p := make([]byte, 5000)
				n, err := d.r.ReadAt(p, off)
				if n != int(vsize-off) || err != io.EOF || !bytes.Equal(p[:n], want[off:]) {
					t.Fatalf("%s vsize %d: ReadAt(5000, %d) = %d, %v (match %v)", d.name, vsize, off, n, err, bytes.Equal(p[:n], want[off:]))
				}
			}
			for _, off := range []int64{vsize, vsize + 1, vsize + 4096} {
				if n, err := d.r.ReadAt(make([]byte, 10), off); n != 0 || err != io.EOF {
					t.Fatalf("%s: ReadAt past the end (%d) = %d, %v", d.name, off, n, err)
				}
			}
		}
		s.Close()
	}
}

// Virtual sizes that cannot be served — not a multiple of 512, past the
// 50-bit sector address space, past int64 — are refused at open, naming
// the file and the field, in committed layers and in writable ones.
func TestAbsurdVirtualSize(t *testing.T) {
	for _, vs := range []uint64{1<<20 + 1000, 1<<20 + 1, MaxVirtualSize + 512, 1 << 62, 1 << 63, 1<<64 - 512} {
		l, _ := compactLayer(1<<20, []Record{{Offset: 0, Length: 4}}, 1)
		l.vsize = vs
		_, err := NewFile(bytes.NewReader(l.bytes()), int64(len(l.bytes())), "big")
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "big: trailer.virtual_size") || !strings.Contains(err.Error(), strconv.FormatUint(vs, 10)) {
			t.Errorf("committed layer, virtual size %d: %v", vs, err)
		}
		dir := t.TempDir()
		d, x := filepath.Join(dir, "d"), filepath.Join(dir, "x")
		w, err := Create(d, x, CreateOptions{VirtualSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		h := newHeader(FlagHeader)
		h.VirtualSize = vs
		h.IndexOffset = HeaderSize
		b, _ := h.MarshalBinary()
		os.WriteFile(x, b, 0o600)
		for _, open := range []func() (*RWFile, error){
			func() (*RWFile, error) { return OpenRW(d, x) },
			func() (*RWFile, error) { return OpenReadOnly(d, x, ReadOnlyOptions{}) },
		} {
			if _, err := open(); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), x+": header.virtual_size") {
				t.Errorf("writable layer, virtual size %d: %v", vs, err)
			}
		}
	}
}

// docs/format-lsmt.md §5.1 with an empty source: no records, no padding (0 is a multiple of
// 256), index_offset 4096, file of 8192 bytes.
func TestEmptyCommittedLayer(t *testing.T) {
	l := rawLayer{hdrFlags: 7, trlFlags: 6, vsize: 1 << 20, uuid: nullUUID, parent: nullUUID, version: 1, subVer: 1, indexSize: -1}
	b := l.bytes()
	if len(b) != 8192 {
		t.Fatalf("%d bytes", len(b))
	}
	f := openBytes(t, b, "empty")
	checkView(t, f, 1<<20, make([]byte, 1<<20))
}

// interopSeeds are small files of the shapes above, for FuzzNewFile.
func interopSeeds() [][]byte {
	recs := []Record{{Offset: 0, Length: 2}, {Offset: 2, Length: 6, Zeroed: true}, {Offset: 9, Length: 3}}
	sealed, _ := compactLayer(64<<10, recs, 1)
	sealed.hdrFlags = FlagHeader | FlagData // docs/format-lsmt.md §5.3: RW header kept
	sealed.pad = bytes.Repeat([]byte{0xA5}, 512-len(recs)*RecordSize)
	tagged, _ := compactLayer(64<<10, recs, 2)
	for i := range tagged.recs {
		tagged.recs[i].Tag = uint8(i + 1)
	}
	tagged.uuid = "c02fb491-b4d4-4904-8684-a014d032af78"
	tagged.tag = bytes.Repeat([]byte("t"), UserTagSize)
	return [][]byte{sealed.bytes(), tagged.bytes()}
}
