package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/obdfs/obdfs/layerfile"
)

type zfileCmd struct {
	Extract bool `short:"x" help:"Decompress SRC (tar-wrapped or bare ZFile) into DST."`
	Verify  bool `help:"Check every block's CRC and decode it; no output file."`
	writeFlags
	zfileOpts
	Src string `arg:"" name:"SRC" help:"Source file; with a single argument and no -x/--verify, the destination (source read from stdin)."`
	Dst string `arg:"" optional:"" name:"DST" help:"Destination file."`
}

func (c *zfileCmd) Run() error {
	if c.Verify || c.Extract {
		f, err := layerfile.OpenPath(c.Src, layerfile.Options{})
		if err != nil {
			return err
		}
		defer f.Close()
		zr := f.ZFile
		if zr == nil {
			return fmt.Errorf("%s: not a ZFile (no ZFile magic)", c.Src)
		}
		if c.Verify {
			if err := zr.Verify(); err != nil {
				return err
			}
			fmt.Printf("%s: ok, %d blocks of %d bytes, %d bytes\n", c.Src, zr.NumBlocks(), zr.BlockSize(), zr.Size())
			return nil
		}
		if c.Dst == "" {
			return fmt.Errorf("zfile -x: DST is required")
		}
		return hintForce(layerfile.Copy(c.Dst, io.NewSectionReader(zr, 0, zr.Size()), layerfile.WriteOptions{Replace: c.Force}))
	}
	zo, err := c.writerOptions()
	if err != nil {
		return fmt.Errorf("zfile: %w", err)
	}
	src, dst := c.Src, c.Dst
	var in io.Reader
	if dst == "" {
		// overlaybd-zfile with one path reads standard input.
		dst, in = src, bufio.NewReaderSize(os.Stdin, 1<<20)
	} else {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		in = bufio.NewReaderSize(f, 1<<20)
	}
	// overlaybd-zfile leaves the initial header in place (flags 0x13), so a
	// reader uses the trailer; write the same.
	wo := c.options(zo)
	wo.KeepZFileHeader = true
	return hintForce(layerfile.Copy(dst, in, wo))
}
