package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/obdfs/obdfs/tarwrap"
	"github.com/obdfs/obdfs/zfile"
)

type zfileCmd struct {
	Extract bool `short:"x" help:"Decompress SRC (tar-wrapped or bare ZFile) into DST."`
	Verify  bool `help:"Check every block's CRC and decode it; no output file."`
	Tar     bool `short:"t" help:"Wrap the compressed output in overlaybd's tar form."`
	Force   bool `short:"f" help:"Replace DST if it exists."`
	zfileOpts
	Src string `arg:"" name:"SRC" help:"Source file; with a single argument and no -x/--verify, the destination (source read from stdin)."`
	Dst string `arg:"" optional:"" name:"DST" help:"Destination file."`
}

func (c *zfileCmd) Run() error {
	switch {
	case c.Verify:
		zr, closeFn, err := openZFile(c.Src)
		if err != nil {
			return err
		}
		defer closeFn()
		if err := zr.Verify(); err != nil {
			return err
		}
		fmt.Printf("%s: ok, %d blocks of %d bytes, %d bytes\n", c.Src, zr.NumBlocks(), zr.BlockSize(), zr.Size())
		return nil
	case c.Extract:
		if c.Dst == "" {
			return fmt.Errorf("zfile -x: DST is required")
		}
		zr, closeFn, err := openZFile(c.Src)
		if err != nil {
			return err
		}
		defer closeFn()
		return writeLayerFile(c.Dst, c.Force, false, nil, func(w io.Writer) error {
			_, err := io.Copy(w, io.NewSectionReader(zr, 0, zr.Size()))
			return err
		})
	}
	o, err := c.writerOptions()
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
	return writeZFileNoOverwrite(dst, c.Force, c.Tar, o, in)
}

func writeZFileNoOverwrite(dst string, force, wrap bool, o zfile.WriterOptions, in io.Reader) error {
	return writeLayerFileOpts(dst, force, wrap, &o, false, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// openZFile opens a (possibly tar-wrapped) ZFile.
func openZFile(path string) (*zfile.Reader, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	member, _, err := tarwrap.Peel(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if !zfile.Is(member) {
		f.Close()
		return nil, nil, fmt.Errorf("%s: not a ZFile (no ZFile magic)", path)
	}
	zr, err := zfile.NewReader(member, member.Size(), zfile.WithName(path))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return zr, f.Close, nil
}
