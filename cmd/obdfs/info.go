package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/tarwrap"
	"github.com/obdfs/obdfs/zfile"
)

func init() { register(&infoCmds{}) }

type infoCmds struct {
	Info infoCmd `cmd:"" help:"Describe overlaybd files: containers, header fields, index and jump-table statistics."`
}

type infoCmd struct {
	Files []string `arg:"" name:"FILE" help:"Layer files (tar-wrapped, ZFile or LSMT), or writable layer data/index files." type:"existingfile"`
}

func (c *infoCmd) Run() error {
	var errs []error
	for i, p := range c.Files {
		if i > 0 {
			fmt.Println()
		}
		if err := describe(os.Stdout, p); err != nil {
			fmt.Fprintf(os.Stdout, "%s: error: %v\n", p, err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func describe(out io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 1, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "%s:\t%d bytes\n", path, st.Size())
	if st.Size() == 0 {
		// overlaybd-create -s leaves the index file of a sparse layer empty.
		fmt.Fprintf(w, "  kind:\tempty file (e.g. the unused index file of a sparse writable layer)\n")
		return nil
	}
	member, wrapped, err := tarwrap.Peel(f, st.Size())
	if err != nil {
		return err
	}
	var data io.ReaderAt = member
	size := member.Size()
	var layers []string
	if wrapped {
		_, off, n := member.Outer()
		fmt.Fprintf(w, "  tar wrapper:\tmember at offset %d, %d bytes\n", off, n)
		layers = append(layers, "tar")
	}
	if zfile.Is(member) {
		zr, err := zfile.NewReader(member, member.Size(), zfile.WithName(path))
		if err != nil {
			return err
		}
		describeZFile(w, zr)
		data, size = zr, zr.Size()
		layers = append(layers, "zfile")
	}
	hb := make([]byte, lsmt.HeaderSize)
	if size < lsmt.HeaderSize {
		return fmt.Errorf("%d bytes: too short for an LSMT header", size)
	}
	if _, err := data.ReadAt(hb, 0); err != nil {
		return err
	}
	h, err := lsmt.ParseHeader(hb)
	if err != nil {
		return err
	}
	if !h.MagicOK() {
		if len(layers) > 0 {
			return fmt.Errorf("no LSMT header inside the %s container", strings.Join(layers, "+"))
		}
		return fmt.Errorf("not an overlaybd file (no tar, ZFile or LSMT magic)")
	}
	switch {
	case !h.IsData():
		fmt.Fprintf(w, "  kind:\twritable layer index file (log of %d records)\n", (size-lsmt.HeaderSize)/lsmt.RecordSize)
		describeLSMTHeader(w, "header", &h)
		return nil
	case !hasTrailer(data, size):
		kind := "writable layer data file"
		if h.IsSparse() {
			kind = "sparse writable layer data file"
		}
		fmt.Fprintf(w, "  kind:\t%s\n", kind)
		describeLSMTHeader(w, "header", &h)
		return nil
	}
	lf, err := lsmt.NewFile(data, size, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  kind:\t%s\n", strings.Join(append(layers, "lsmt"), "+")+" read-only layer")
	tr := lf.Header()
	describeLSMTHeader(w, "trailer", &tr)
	var zeroed, dataRecs, dataSectors, zeroSectors, maxLen uint64
	for _, r := range lf.Index() {
		if r.Zeroed {
			zeroed++
			zeroSectors += r.Length
		} else {
			dataRecs++
			dataSectors += r.Length
		}
		maxLen = max(maxLen, r.Length)
	}
	fmt.Fprintf(w, "  index:\t%d records on disk (%d padding), %d data, %d zeroed, longest %d sectors\n",
		tr.IndexSize, tr.IndexSize-uint64(len(lf.Index())), dataRecs, zeroed, maxLen)
	fmt.Fprintf(w, "  mapped:\t%d bytes of data, %d bytes zeroed (of %d virtual)\n",
		dataSectors*lsmt.SectorSize, zeroSectors*lsmt.SectorSize, tr.VirtualSize)
	return nil
}

// hasTrailer reports whether the file ends in a sealed LSMT trailer.
func hasTrailer(r io.ReaderAt, size int64) bool {
	if size < 2*lsmt.HeaderSize {
		return false
	}
	b := make([]byte, lsmt.HeaderSize)
	if _, err := r.ReadAt(b, size-lsmt.HeaderSize); err != nil {
		return false
	}
	t, err := lsmt.ParseHeader(b)
	return err == nil && t.MagicOK() && !t.IsHeader() && t.IsSealed()
}

func describeLSMTHeader(w io.Writer, what string, h *lsmt.Header) {
	fmt.Fprintf(w, "  lsmt %s:\tflags %#x, version %d.%d\n", what, h.Flags, h.Version, h.SubVersion)
	fmt.Fprintf(w, "  virtual size:\t%d bytes (%.2f GiB)\n", h.VirtualSize, float64(h.VirtualSize)/(1<<30))
	fmt.Fprintf(w, "  uuid:\t%s\n", h.UUIDString())
	fmt.Fprintf(w, "  parent uuid:\t%s\n", h.ParentUUIDString())
	if t := h.Tag(); t != "" {
		fmt.Fprintf(w, "  message:\t%q\n", t)
	}
	if h.IsSealed() || h.IndexOffset != 0 {
		fmt.Fprintf(w, "  index offset:\t%d\n", h.IndexOffset)
	}
}

func describeZFile(w io.Writer, zr *zfile.Reader) {
	i := zr.Info()
	check := "none"
	if i.Verify {
		check = "raw CRC32C per block"
	}
	fmt.Fprintf(w, "  zfile:\t%s, %d-byte blocks, %s; index fields from the %s\n", i.Algorithm, i.BlockSize, check, i.Structure())
	fmt.Fprintf(w, "  zfile flags:\theader %#x, used %#x; header digest ok %v, index crc checked %v\n",
		i.Header.Flags, i.Used.Flags, i.HeaderDigestOK, i.IndexCRCChecked)
	ratio := 0.0
	if i.OriginalSize > 0 {
		ratio = float64(i.CompressedBytes) / float64(i.OriginalSize)
	}
	fmt.Fprintf(w, "  jump table:\t%d blocks at offset %d; %d bytes stored for %d (%.1f%%)\n",
		i.NumBlocks, i.IndexOffset, i.CompressedBytes, i.OriginalSize, 100*ratio)
}
