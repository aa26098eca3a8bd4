package lsmt_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/obdfs/obdfs/internal/fixture"

	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/lsmt"
)

// A config.v1.json whose upper is a sparse layer (as the
// accelerated-container-image converter writes them) opens through
// image.Open, writes, and keeps its data across a reopen.
func TestSparseUpperThroughImage(t *testing.T) {
	fx := filepath.Dir(fixture.Oracle(t, "d/l1.lsmt"))
	dir := t.TempDir()
	data, index := filepath.Join(dir, "writable_data"), filepath.Join(dir, "writable_index")
	up, err := lsmt.Create(data, index, lsmt.CreateOptions{Sparse: true}) // vsize 0: inherit
	if err != nil {
		t.Fatal(err)
	}
	up.Close()
	cfg, _ := json.Marshal(map[string]any{
		"lowers": []map[string]string{{"file": filepath.Join(fx, "l1.lsmt")}, {"file": filepath.Join(fx, "l2.lsmt")}},
		"upper":  map[string]string{"index": "writable_index", "data": "writable_data"},
	})
	conf := filepath.Join(dir, "config.v1.json")
	if err := os.WriteFile(conf, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := image.Open(conf, image.Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Upper() == nil || !s.Upper().Sparse() || s.Size() != 64<<20 {
		t.Fatalf("upper %v, size %d", s.Upper(), s.Size())
	}
	lower := make([]byte, 8192)
	s.ReadAt(lower, 1<<20)
	p := bytes.Repeat([]byte("sparse upper "), 1000)[:10000]
	if _, err := s.WriteAt(p, 1<<20+100); err != nil { // unaligned: read-modify-write
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(data); st.Size() != lsmt.HeaderSize+64<<20 {
		t.Fatalf("data file %d bytes", st.Size())
	}
	if st, _ := os.Stat(index); st.Size() != 0 {
		t.Fatalf("index file written: %d bytes", st.Size())
	}
	s, err = image.Open(conf, image.Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make([]byte, 10100)
	if _, err := s.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:100], lower[:100]) || !bytes.Equal(got[100:], p) {
		t.Fatal("data not kept across a reopen")
	}
}
