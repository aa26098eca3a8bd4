package diskimport

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// writeBlocks writes a distinct 4 KiB pattern at each block number.
func writeBlocks(t *testing.T, path string, blocks map[int64]byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for b, v := range blocks {
		if _, err := f.WriteAt(bytes.Repeat([]byte{v}, BlockSize), b*BlockSize); err != nil {
			t.Fatal(err)
		}
	}
}

// importTo imports disk over base into a committed layer file.
func importTo(t *testing.T, disk, out string, base *image.Stack) Stats {
	t.Helper()
	l, st, err := Import(disk, Options{Base: base, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := layerfile.Commit(out, l, lsmt.CommitArgs{UUID: l.UUID()}, layerfile.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return st
}

func readAll(t *testing.T, spec string) []byte {
	t.Helper()
	s, err := image.Open(spec, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := make([]byte, s.Size())
	if _, err := s.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// dataBytes sums a layer file's records: data and zeroed.
func dataBytes(t *testing.T, path string) (data, zeroed int64) {
	t.Helper()
	f, err := lsmt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range f.Index() {
		if r.Zeroed {
			zeroed += int64(r.Length) * lsmt.SectorSize
		} else {
			data += int64(r.Length) * lsmt.SectorSize
		}
	}
	return data, zeroed
}

func TestImportQcow2AndDelta(t *testing.T) {
	needs.Commands(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "base.raw")
	run(t, "qemu-img", "create", "-f", "raw", raw, "64M")
	// Data blocks, one allocated all-zero block (must not be stored), and a
	// size that is not a multiple of 4 KiB.
	writeBlocks(t, raw, map[int64]byte{0: 1, 1: 2, 100: 3, 5000: 4, 16383: 5, 200: 0})
	qcow := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow)
	flat := filepath.Join(dir, "flat.raw")
	run(t, "qemu-img", "convert", "-O", "raw", qcow, flat)

	baseLayer := filepath.Join(dir, "base.layer")
	st := importTo(t, qcow, baseLayer, nil)
	if st.Format != "qcow2" || st.Written != 5*BlockSize {
		t.Errorf("stats %+v: want qcow2 and 5 blocks written", st)
	}
	want, err := os.ReadFile(flat)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, baseLayer); !bytes.Equal(got, want) {
		t.Fatalf("import of the qcow2 differs from qemu-img convert -O raw (%d vs %d bytes)", len(got), len(want))
	}
	if d, z := dataBytes(t, baseLayer); d != 5*BlockSize || z != 0 {
		t.Errorf("base layer holds %d data and %d zeroed bytes, want %d and 0", d, z, 5*BlockSize)
	}

	// A derived disk: one block changed, one added in a hole, one zeroed
	// where the base had data, one rewritten with the same bytes.
	writeBlocks(t, raw, map[int64]byte{1: 9, 7000: 8, 100: 0, 5000: 4})
	base, err := image.Open(baseLayer, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	delta := filepath.Join(dir, "delta.layer")
	st = importTo(t, raw, delta, base)
	base.Close()
	if st.Format != "raw" || st.Written != 2*BlockSize || st.Discarded != BlockSize {
		t.Errorf("delta stats %+v: want 2 blocks written, 1 discarded", st)
	}
	if d, z := dataBytes(t, delta); d != 2*BlockSize || z != BlockSize {
		t.Errorf("delta layer holds %d data and %d zeroed bytes, want %d and %d", d, z, 2*BlockSize, BlockSize)
	}
	want, err = os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, baseLayer+","+delta); !bytes.Equal(got, want) {
		t.Fatal("base + delta does not read back as the derived disk")
	}
	// The delta's parent is the base's top.
	bf, _ := lsmt.Open(baseLayer)
	df, _ := lsmt.Open(delta)
	defer bf.Close()
	defer df.Close()
	if df.ParentUUID() != bf.UUID() || lsmt.IsNullUUID(bf.UUID()) {
		t.Errorf("delta parent %s, base uuid %s", df.ParentUUID(), bf.UUID())
	}
}

func TestImportRefusesBadInput(t *testing.T) {
	needs.Commands(t, "qemu-img")
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.raw")
	os.WriteFile(empty, nil, 0o644)
	if _, _, err := Import(empty, Options{WorkDir: dir}); err == nil {
		t.Error("an empty disk was accepted")
	}
	if _, _, err := Import(dir, Options{WorkDir: dir}); err == nil {
		t.Error("a directory was accepted")
	}
	bad := filepath.Join(dir, "bad.qcow2")
	os.WriteFile(bad, append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 100)...), 0o644)
	if _, _, err := Import(bad, Options{WorkDir: dir}); err == nil {
		t.Error("a corrupt qcow2 was accepted")
	}
}

// TestImportFormats: vmdk and vhdx (and qcow2 with zstd clusters) read
// back as qemu-img converts them to raw.
func TestImportFormats(t *testing.T) {
	needs.Commands(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	run(t, "qemu-img", "create", "-f", "raw", raw, "32M")
	writeBlocks(t, raw, map[int64]byte{3: 1, 4000: 2, 8191: 3})
	for _, c := range []struct{ format, opts string }{
		{"vmdk", ""}, {"vhdx", ""}, {"qcow2", "compression_type=zstd"},
	} {
		t.Run(c.format, func(t *testing.T) {
			img := filepath.Join(dir, "disk."+c.format)
			args := []string{"convert", "-f", "raw", "-O", c.format}
			if c.opts != "" {
				args = append(args, "-o", c.opts, "-c")
			}
			run(t, "qemu-img", append(args, raw, img)...)
			flat := img + ".raw"
			run(t, "qemu-img", "convert", "-O", "raw", img, flat)
			out := img + ".layer"
			st := importTo(t, img, out, nil)
			if st.Format != c.format {
				t.Errorf("format %q", st.Format)
			}
			want, err := os.ReadFile(flat)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readAll(t, out), want) {
				t.Error("import differs from qemu-img convert -O raw")
			}
		})
	}
}
