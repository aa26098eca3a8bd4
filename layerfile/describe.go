package layerfile

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/zfile"
)

// DescribePath writes what the file at path is, for `obdfs info`: its
// containers (tar member, ZFile jump table and flags), its content and the
// LSMT header fields, and for a read-only layer the index statistics. An
// error says what is wrong after what could be described was written.
func DescribePath(out io.Writer, path string) error {
	f, err := OpenPath(path, Options{})
	if err != nil {
		return err
	}
	defer f.Close()
	w := tabwriter.NewWriter(out, 0, 4, 1, ' ', 0)
	defer w.Flush()
	k := f.Kind
	fmt.Fprintf(w, "%s:\t%d bytes\n", path, f.Size)
	if k.Content == Empty {
		// overlaybd-create -s leaves the index file of a sparse layer empty.
		fmt.Fprintf(w, "  kind:\tempty file (e.g. the unused index file of a sparse writable layer)\n")
		return nil
	}
	if k.Tar {
		_, off, n := f.Member.Outer()
		fmt.Fprintf(w, "  tar wrapper:\tmember at offset %d, %d bytes\n", off, n)
	}
	if f.ZFile != nil {
		describeZFile(w, f.ZFile)
	}
	if k.Content == Unknown {
		if c := k.Containers(); c != "" {
			return fmt.Errorf("no LSMT header inside the %s container", c)
		}
		return fmt.Errorf("not an overlaybd file (no tar, ZFile or LSMT magic)")
	}
	if !k.Content.ReadOnly() {
		var hb [lsmt.HeaderSize]byte
		if _, err := f.Data.ReadAt(hb[:], 0); err != nil {
			return err
		}
		h, err := lsmt.ParseHeader(hb[:])
		if err != nil {
			return err
		}
		if k.Content == RWIndex {
			fmt.Fprintf(w, "  kind:\twritable layer index file (log of %d records)\n", (f.DataSize-lsmt.HeaderSize)/lsmt.RecordSize)
		} else {
			fmt.Fprintf(w, "  kind:\t%s\n", k.Content)
		}
		describeLSMTHeader(w, "header", &h)
		return nil
	}
	lf := f.LSMT
	fmt.Fprintf(w, "  kind:\t%s read-only layer\n", k)
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
