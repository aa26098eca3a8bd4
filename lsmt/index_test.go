package lsmt

import (
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
)

func recs(v ...[4]uint64) []Record {
	out := make([]Record, len(v))
	for i, x := range v {
		out[i] = Record{Offset: x[0], Length: x[1], MOffset: x[2], Tag: uint8(x[3])}
	}
	return out
}

func mustIndex(t testing.TB, r []Record) *sortedIndex {
	t.Helper()
	ix, err := newIndex(r)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// Lookup vectors of docs/format-lsmt.md §10 (overlaybd TEST(Index, lookup)).
func TestIndexLookup(t *testing.T) {
	ix := mustIndex(t, recs([4]uint64{0, 10, 0}, [4]uint64{10, 10, 50}, [4]uint64{100, 10, 20}))
	tests := []struct {
		off, n uint64
		want   []Record
	}{
		{5, 10, recs([4]uint64{5, 5, 5}, [4]uint64{10, 5, 50})},
		{16, 10, recs([4]uint64{16, 4, 56})},
		{26, 10, nil},
		{6, 100, recs([4]uint64{6, 4, 6}, [4]uint64{10, 10, 50}, [4]uint64{100, 6, 20})},
		{0, 1 << 40, ix.Records()},
		{110, 5, nil},
	}
	for _, tt := range tests {
		got := ix.Lookup(nil, tt.off, tt.n)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Lookup(%d,%d) = %v, want %v", tt.off, tt.n, got, tt.want)
		}
	}
}

func TestNewIndexRejects(t *testing.T) {
	for name, r := range map[string][]Record{
		"overlap":  recs([4]uint64{0, 10, 8}, [4]uint64{5, 10, 8}),
		"unsorted": recs([4]uint64{20, 10, 8}, [4]uint64{5, 10, 8}),
		"length":   {{Offset: 0, Length: MaxLength + 1}},
		"moffset":  {{Offset: 0, Length: 1, MOffset: MaxMOffset + 1, Zeroed: true}},
		"mend":     {{Offset: 0, Length: 2, MOffset: MaxMOffset}},
	} {
		if _, err := newIndex(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Merge vector of docs/format-lsmt.md §10 (overlaybd TEST(Index, merge)): L0 on top of L1.
func TestMerge(t *testing.T) {
	l0 := mustIndex(t, recs([4]uint64{5, 5, 0}, [4]uint64{10, 10, 50}, [4]uint64{100, 10, 20}))
	l1 := mustIndex(t, recs([4]uint64{0, 1, 7}, [4]uint64{2, 4, 5}, [4]uint64{15, 10, 22}, [4]uint64{30, 15, 89}, [4]uint64{87, 50, 32}, [4]uint64{150, 10, 84}))
	m, err := mergeIndexes([]*sortedIndex{l1, l0}) // bottom first
	if err != nil {
		t.Fatal(err)
	}
	// overlaybd's test treats L0 as the RW layer (tag 1) over L1 (tag 0);
	// in a pure RO merge the top layer is tag 0, so the tags are swapped.
	want := recs([4]uint64{0, 1, 7, 1}, [4]uint64{2, 3, 5, 1}, [4]uint64{5, 5, 0, 0}, [4]uint64{10, 10, 50, 0}, [4]uint64{20, 5, 27, 1},
		[4]uint64{30, 15, 89, 1}, [4]uint64{87, 13, 32, 1}, [4]uint64{100, 10, 20, 0}, [4]uint64{110, 27, 55, 1}, [4]uint64{150, 10, 84, 1})
	if !reflect.DeepEqual(m.Records(), want) {
		t.Fatalf("merge =\n%v\nwant\n%v", m.Records(), want)
	}
	if _, err := mergeIndexes(make([]*sortedIndex, MaxLayers+1)); err == nil {
		t.Fatal("256 layers accepted")
	}
}

func TestMergeZeroedMasks(t *testing.T) {
	top := mustIndex(t, []Record{{Offset: 10, Length: 10, MOffset: 8, Zeroed: true}})
	low := mustIndex(t, recs([4]uint64{0, 30, 100}))
	m, _ := mergeIndexes([]*sortedIndex{low, top})
	want := []Record{{Offset: 0, Length: 10, MOffset: 100, Tag: 1}, {Offset: 10, Length: 10, MOffset: 8, Zeroed: true}, {Offset: 20, Length: 10, MOffset: 120, Tag: 1}}
	if !reflect.DeepEqual(m.Records(), want) {
		t.Fatalf("got %v", m.Records())
	}
}

// Differential: the merged index against a naive per-sector model.
func TestMergeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		nl := 1 + rng.IntN(6)
		layers := make([]*sortedIndex, nl)
		const space = 400
		type cell struct {
			set     bool
			zero    bool
			tag     uint8
			msector uint64
		}
		model := make([]cell, space)
		for k := 0; k < nl; k++ {
			var rs []Record
			var off uint64
			for {
				off += uint64(rng.IntN(20))
				n := uint64(1 + rng.IntN(30))
				if off+n > space {
					break
				}
				rs = append(rs, Record{Offset: off, Length: n, MOffset: uint64(rng.IntN(1000)), Zeroed: rng.IntN(4) == 0})
				off += n
			}
			layers[k] = mustIndex(t, rs)
		}
		for k := 0; k < nl; k++ { // bottom to top: later layers overwrite
			for _, r := range layers[k].Records() {
				for s := r.Offset; s < r.End(); s++ {
					c := cell{set: true, zero: r.Zeroed, tag: uint8(nl - 1 - k), msector: r.MOffset + s - r.Offset}
					if r.Zeroed {
						c.msector = r.MOffset
					}
					model[s] = c
				}
			}
		}
		m, err := mergeIndexes(layers)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]cell, space)
		for _, r := range m.Records() {
			for s := r.Offset; s < r.End(); s++ {
				c := cell{set: true, zero: r.Zeroed, tag: r.Tag, msector: r.MOffset + s - r.Offset}
				if r.Zeroed {
					c.msector = r.MOffset
				}
				got[s] = c
			}
		}
		if !reflect.DeepEqual(got, model) {
			t.Fatalf("iter %d: merged view differs from model", iter)
		}
		if _, err := newIndex(append([]Record(nil), m.Records()...)); err != nil {
			t.Fatalf("merged index invalid: %v", err)
		}
	}
}

// Fold vectors of docs/format-lsmt.md §10 (overlaybd TEST(Index, compress)).
func TestCompress(t *testing.T) {
	tests := []struct{ in, want []Record }{
		{recs([4]uint64{5, 5, 0}, [4]uint64{10, 10, 5}, [4]uint64{100, 10, 20}), recs([4]uint64{5, 15, 0}, [4]uint64{100, 10, 20})},
		{recs([4]uint64{5, 5, 0}, [4]uint64{10, 10, 5}, [4]uint64{20, 10, 15, 1}, [4]uint64{100, 10, 20}), recs([4]uint64{5, 15, 0}, [4]uint64{20, 10, 15, 1}, [4]uint64{100, 10, 20})},
		{recs([4]uint64{0, 8000, 8}, [4]uint64{8000, 8382, 8008}), recs([4]uint64{0, 16382, 8})},
		{recs([4]uint64{0, 8000, 8}, [4]uint64{8000, 8383, 8008}), recs([4]uint64{0, 8000, 8}, [4]uint64{8000, 8383, 8008})},
		{[]Record{{Offset: 0, Length: 4, MOffset: 8}, {Offset: 4, Length: 4, MOffset: 12, Zeroed: true}}, []Record{{Offset: 0, Length: 4, MOffset: 8}, {Offset: 4, Length: 4, MOffset: 12, Zeroed: true}}},
		{[]Record{{Offset: 0, Length: 4, MOffset: 12, Zeroed: true}, {Offset: 4, Length: 4, MOffset: 12, Zeroed: true}}, []Record{{Offset: 0, Length: 8, MOffset: 12, Zeroed: true}}},
	}
	for i, tt := range tests {
		if got := compressRecords(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%d: got %v want %v", i, got, tt.want)
		}
	}
}

// Log replay vector of docs/format-lsmt.md §10 (overlaybd TEST(Index0, insert)).
func TestMemIndexInsert(t *testing.T) {
	m := newMemIndex()
	for _, r := range recs([4]uint64{0, 20, 0}, [4]uint64{10, 15, 50}, [4]uint64{30, 100, 20}, [4]uint64{5, 10, 3}, [4]uint64{40, 10, 123}, [4]uint64{200, 10, 2133}, [4]uint64{150, 100, 21}) {
		m.Insert(r)
	}
	want := recs([4]uint64{0, 5, 0}, [4]uint64{5, 10, 3}, [4]uint64{15, 10, 55}, [4]uint64{30, 10, 20}, [4]uint64{40, 10, 123}, [4]uint64{50, 80, 40}, [4]uint64{150, 100, 21})
	if got := m.Records(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if got := m.Lookup(nil, 12, 30); !reflect.DeepEqual(got, recs([4]uint64{12, 3, 10}, [4]uint64{15, 10, 55}, [4]uint64{30, 10, 20}, [4]uint64{40, 2, 123})) {
		t.Fatalf("lookup %v", got)
	}
	// zeroed records keep their moffset when split
	m.Insert(Record{Offset: 1000, Length: 10, MOffset: 77, Zeroed: true})
	m.Insert(Record{Offset: 1004, Length: 2, MOffset: 90})
	want2 := []Record{{Offset: 1000, Length: 4, MOffset: 77, Zeroed: true}, {Offset: 1004, Length: 2, MOffset: 90}, {Offset: 1006, Length: 4, MOffset: 77, Zeroed: true}}
	if got := m.Lookup(nil, 1000, 10); !reflect.DeepEqual(got, want2) {
		t.Fatalf("zeroed split %v", got)
	}
}

func TestSTree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 15, 16, 17, 255, 256, 257, 4097, 70000} {
		keys := make([]uint64, n)
		var k uint64
		for i := range keys {
			k += 1 + uint64(rng.IntN(5))
			keys[i] = k
		}
		var st stree
		st.build(keys)
		for q := 0; q < 2000; q++ {
			x := uint64(rng.IntN(int(k) + 10))
			want := sort.Search(n, func(i int) bool { return keys[i] >= x })
			if got := st.lowerBound(x); got != want {
				t.Fatalf("n=%d lowerBound(%d)=%d want %d", n, x, got, want)
			}
		}
	}
}

// randomRecords returns n valid records from start on, with random gaps,
// lengths, flags, tags and mapped sectors up to MaxMOffset.
func randomRecords(rng *rand.Rand, n int, start uint64) []Record {
	rs := make([]Record, n)
	off := start
	for i := range rs {
		off += uint64(rng.IntN(4)) * uint64(1+rng.IntN(20))
		l := 1 + uint64(rng.IntN(40))
		if rng.IntN(50) == 0 {
			l = MaxLength
		}
		r := Record{Offset: off, Length: l, MOffset: rng.Uint64N(MaxMOffset - l + 2), Zeroed: rng.IntN(3) == 0, Tag: uint8(rng.IntN(255))}
		if r.Zeroed && rng.IntN(2) == 0 {
			r.MOffset = MaxMOffset
		}
		rs[i] = r
		off += l
	}
	return rs
}

// Differential: Find and Lookup against a scan of the records, for sizes
// around the leaf group and tree node boundaries and offsets up to the end
// of the address space.
func TestIndexFindRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 2, 15, 16, 17, 31, 32, 33, 255, 256, 257, 4095, 4096, 4097, 20000} {
		for _, start := range []uint64{0, 1000, InvalidOffset - uint64(n)*200 - MaxLength*uint64(n/50+1)} {
			rs := randomRecords(rng, n, start)
			ix := mustIndex(t, append([]Record(nil), rs...))
			var last uint64
			if n > 0 {
				last = rs[n-1].End()
			}
			queries := []uint64{0, start, last - 1, last, last + 1, InvalidOffset, 1<<64 - 2}
			for range 3000 {
				queries = append(queries, start+rng.Uint64N(last-start+50))
			}
			for _, q := range queries {
				want := sort.Search(n, func(i int) bool { return rs[i].End() > q })
				if got := ix.Find(q); got != want {
					t.Fatalf("n=%d start=%d: Find(%d) = %d, want %d", n, start, q, got, want)
				}
				length := uint64(1 + rng.IntN(3000))
				var wantL []Record
				for i := want; i < n && rs[i].Offset < q+length; i++ {
					wantL = append(wantL, rs[i].trim(q, q+length))
				}
				if got := ix.Lookup(nil, q, length); !reflect.DeepEqual(got, wantL) {
					t.Fatalf("n=%d start=%d: Lookup(%d, %d) = %v, want %v", n, start, q, length, got, wantL)
				}
			}
		}
	}
}

// The packed leaves hold records in their on-disk layout, losslessly.
func TestPackedRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, r := range append(randomRecords(rng, 1000, InvalidOffset-1000*MaxLength), invalidRecord,
		Record{Offset: InvalidOffset - 1, Length: 1, MOffset: MaxMOffset, Zeroed: true, Tag: 254}) {
		p := packRecord(r)
		var b [RecordSize]byte
		r.Encode(b[:])
		if p.w0 != binary.LittleEndian.Uint64(b[:]) || p.w1 != binary.LittleEndian.Uint64(b[8:]) {
			t.Fatalf("%v packs as %#x %#x, on disk %x", r, p.w0, p.w1, b)
		}
		var got Record
		p.decode(&got)
		if got != r || p.end() != r.End() {
			t.Fatalf("%v round-trips as %v (end %d)", r, got, p.end())
		}
	}
}
