// Package diskimport turns a VM disk image into a committed overlaybd layer.
// A raw image is read through its allocated extents (SEEK_DATA/SEEK_HOLE);
// any other format qemu-img reads (qcow2, vmdk, vhdx, ...) is first
// converted by `qemu-img convert` into a sparse raw file in a private
// temporary directory. Only allocated, non-zero 4 KiB blocks are written.
// Over a base stack, only blocks that differ from the base are written, and
// blocks the base holds but the disk reads as zeros become discard records,
// so the delta layer stacked on the base reads back as the disk.
package diskimport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/lsmt"
)

// BlockSize is the unit of comparison and of skipped zeros.
const BlockSize = 4096

// Options configure Import.
type Options struct {
	// Base, if not nil, is the stack the layer goes on: only differing
	// blocks are written, and the layer's parent is the base's top.
	Base *image.Stack
	// UUID of the layer ("" = random).
	UUID string
	// WorkDir holds the temporary raw conversion and writable layer
	// (default os.TempDir()).
	WorkDir string
	// Progress, if not nil, is called with bytes of the disk examined.
	Progress func(done, total int64)
}

// Stats describe an import.
type Stats struct {
	Format      string // as qemu-img reports it ("raw" for a plain file)
	VirtualSize int64
	Examined    int64 // bytes compared (allocated in the disk or in the base)
	Written     int64 // bytes of data written into the layer
	Discarded   int64 // bytes the base holds and the disk reads as zeros
}

// Layer is an imported, not yet committed layer: commit it (it is an
// lsmt.CommitSource) and Close it.
type Layer struct {
	*lsmt.RWFile
	dir string
}

// Close closes the writable layer and removes the temporary files.
func (l *Layer) Close() error {
	return errors.Join(l.RWFile.Close(), os.RemoveAll(l.dir))
}

// Import reads the disk at path into a new writable layer.
func Import(path string, o Options) (_ *Layer, st Stats, err error) {
	dir, err := os.MkdirTemp(o.WorkDir, "obdfs-import")
	if err != nil {
		return nil, st, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	raw, format, err := asRaw(path, dir)
	if err != nil {
		return nil, st, err
	}
	st.Format = format
	f, err := os.Open(raw)
	if err != nil {
		return nil, st, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, st, err
	}
	st.VirtualSize = (fi.Size() + lsmt.SectorSize - 1) / lsmt.SectorSize * lsmt.SectorSize
	if st.VirtualSize == 0 {
		return nil, st, fmt.Errorf("%s: empty disk", path)
	}
	co := lsmt.CreateOptions{VirtualSize: st.VirtualSize, UUID: o.UUID}
	var base []span
	if o.Base != nil {
		if o.Base.Upper() != nil {
			return nil, st, fmt.Errorf("base %s has a writable upper layer; give committed layers", o.Base.Spec)
		}
		lowers := o.Base.Lowers()
		if len(lowers) == 0 {
			return nil, st, fmt.Errorf("base %s has no layers", o.Base.Spec)
		}
		co.ParentUUID = lowers[len(lowers)-1].File.UUID()
		for _, lo := range lowers {
			for _, r := range lo.File.Index() {
				if !r.Zeroed {
					base = append(base, span{int64(r.Offset) * lsmt.SectorSize, int64(r.End()) * lsmt.SectorSize})
				}
			}
		}
	}
	rw, err := lsmt.Create(filepath.Join(dir, "layer.data"), filepath.Join(dir, "layer.index"), co)
	if err != nil {
		return nil, st, err
	}
	l := &Layer{RWFile: rw, dir: dir}
	defer func() {
		if err != nil {
			rw.Close()
		}
	}()
	data, err := dataSpans(f, fi.Size())
	if err != nil {
		return nil, st, fmt.Errorf("%s: %w", raw, err)
	}
	spans := union(append(data, base...), st.VirtualSize)
	var total int64
	for _, s := range spans {
		total += s.end - s.off
	}
	im := importer{f: f, size: fi.Size(), rw: rw, st: &st, total: total, progress: o.Progress}
	if o.Base != nil {
		im.base = o.Base
	}
	for _, s := range spans {
		if err := im.span(s); err != nil {
			return nil, st, fmt.Errorf("import %s at %d: %w", path, s.off, err)
		}
	}
	if err := im.flush(); err != nil {
		return nil, st, err
	}
	if err := rw.Sync(); err != nil {
		return nil, st, err
	}
	return l, st, nil
}

type span struct{ off, end int64 }

// asRaw returns a raw file with the disk's content: path itself when it is
// raw, else a sparse conversion in dir.
func asRaw(path, dir string) (string, string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", err
	}
	if !fi.Mode().IsRegular() {
		return "", "", fmt.Errorf("%s: not a regular file", path)
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", path).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", "", fmt.Errorf("qemu-img info %s: %s", path, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", "", fmt.Errorf("qemu-img info %s (install qemu-utils): %w", path, err)
	}
	var info struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Format == "" {
		return "", "", fmt.Errorf("qemu-img info %s: unreadable answer", path)
	}
	if info.Format == "raw" {
		return path, "raw", nil
	}
	raw := filepath.Join(dir, "disk.raw")
	cmd := exec.Command("qemu-img", "convert", "-f", info.Format, "-O", "raw", path, raw)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("qemu-img convert %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return raw, info.Format, nil
}

// dataSpans lists the allocated extents of f.
func dataSpans(f *os.File, size int64) ([]span, error) {
	var out []span
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			if err == unix.EINVAL || err == unix.EOPNOTSUPP {
				return []span{{0, size}}, nil // no extent map: read everything
			}
			return nil, fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d: %w", start, err)
		}
		out = append(out, span{start, end})
		off = end
	}
	return out, nil
}

// union aligns spans to blocks, clips them to size, sorts and merges them.
func union(s []span, size int64) []span {
	for i := range s {
		s[i].off = s[i].off / BlockSize * BlockSize
		s[i].end = min((s[i].end+BlockSize-1)/BlockSize*BlockSize, size)
	}
	sort.Slice(s, func(i, j int) bool { return s[i].off < s[j].off })
	var out []span
	for _, x := range s {
		if x.end <= x.off {
			continue
		}
		if n := len(out); n > 0 && x.off <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, x.end)
			continue
		}
		out = append(out, x)
	}
	return out
}

const chunk = 1 << 20

type importer struct {
	f        *os.File
	size     int64
	rw       *lsmt.RWFile
	base     io.ReaderAt
	st       *Stats
	total    int64
	progress func(done, total int64)
	buf      [chunk]byte
	old      [chunk]byte
	// pending is a run of blocks to write (data) or discard, coalesced.
	pend       []byte
	pendOff    int64
	pendLen    int64
	pendZeroed bool
}

var zero [BlockSize]byte

func (im *importer) span(s span) error {
	for off := s.off; off < s.end; {
		n := min(chunk, s.end-off)
		b := im.buf[:n]
		got, err := im.f.ReadAt(b, off)
		if err != nil && err != io.EOF {
			return err
		}
		clear(b[got:]) // the last sector past the file's end reads as zeros
		var old []byte
		if im.base != nil {
			old = im.old[:n]
			if _, err := im.base.ReadAt(old, off); err != nil && err != io.EOF {
				return fmt.Errorf("reading the base: %w", err)
			}
		}
		for i := int64(0); i < n; i += BlockSize {
			blk := b[i:min(i+BlockSize, n)]
			isZero := bytes.Equal(blk, zero[:len(blk)])
			switch {
			case old == nil && isZero:
				err = im.flush()
			case old == nil:
				err = im.add(off+i, blk, false)
			case bytes.Equal(blk, old[i:i+int64(len(blk))]):
				err = im.flush()
			case isZero:
				err = im.add(off+i, blk, true)
			default:
				err = im.add(off+i, blk, false)
			}
			if err != nil {
				return err
			}
		}
		im.st.Examined += n
		if im.progress != nil {
			im.progress(im.st.Examined, im.total)
		}
		off += n
	}
	return im.flush()
}

// add appends a block to the pending run, flushing first when it does not
// continue it.
func (im *importer) add(off int64, blk []byte, zeroed bool) error {
	if im.pendLen > 0 && (off != im.pendOff+im.pendLen || zeroed != im.pendZeroed || im.pendLen >= chunk) {
		if err := im.flush(); err != nil {
			return err
		}
	}
	if im.pendLen == 0 {
		im.pendOff, im.pendZeroed, im.pend = off, zeroed, im.pend[:0]
	}
	if !zeroed {
		im.pend = append(im.pend, blk...)
	}
	im.pendLen += int64(len(blk))
	return nil
}

func (im *importer) flush() error {
	if im.pendLen == 0 {
		return nil
	}
	n := im.pendLen
	im.pendLen = 0
	if im.pendZeroed {
		im.st.Discarded += n
		return im.rw.Discard(im.pendOff, n)
	}
	im.st.Written += n
	_, err := im.rw.WriteAt(im.pend, im.pendOff)
	return err
}
