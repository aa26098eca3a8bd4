package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/obdfs/obdfs/image"
)

func init() { register(&catCmds{}) }

type catCmds struct {
	Cat catCmd `cmd:"" help:"Write the merged virtual disk of a STACK as raw bytes."`
}

type catCmd struct {
	Output string `short:"o" placeholder:"OUT" help:"Write to this file (sparse: zero ranges become holes) instead of standard output."`
	Offset int64  `help:"Start at this byte offset of the virtual disk." default:"0"`
	Length int64  `help:"Write this many bytes (default: to the end of the disk)." default:"-1"`
	stackFlags
	Stack string `arg:"" name:"STACK" help:"Image config (*.json) or layer files, comma-separated, bottom first."`
}

func (c *catCmd) Run() error {
	o, err := c.imageOptions(nil)
	if err != nil {
		return err
	}
	s, err := image.Open(c.Stack, o)
	if err != nil {
		return err
	}
	defer s.Close()
	size := s.Size()
	if c.Offset < 0 || c.Offset > size {
		return fmt.Errorf("cat: --offset %d outside the %d-byte disk", c.Offset, size)
	}
	n := size - c.Offset
	if c.Length >= 0 {
		if c.Length > n {
			return fmt.Errorf("cat: --offset %d --length %d runs past the %d-byte disk", c.Offset, c.Length, size)
		}
		n = c.Length
	}
	src := io.NewSectionReader(s, c.Offset, n)
	if c.Output == "" || c.Output == "-" {
		_, err := io.CopyBuffer(os.Stdout, src, make([]byte, 1<<20))
		return err
	}
	f, err := os.OpenFile(c.Output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := copySparse(f, src, n); err != nil {
		f.Close()
		return fmt.Errorf("cat: %s: %w", c.Output, err)
	}
	return f.Close()
}

// copySparse copies n bytes, seeking over all-zero 64 KiB chunks so the
// output is a sparse file, then sets its exact size.
func copySparse(f *os.File, r io.Reader, n int64) error {
	const chunk = 64 << 10
	buf := make([]byte, 1<<20)
	zero := make([]byte, chunk)
	var off int64
	for off < n {
		m, err := io.ReadFull(r, buf[:min(int64(len(buf)), n-off)])
		if err != nil {
			return err
		}
		for i := 0; i < m; i += chunk {
			p := buf[i:min(i+chunk, m)]
			if !bytes.Equal(p, zero[:len(p)]) {
				if _, err := f.WriteAt(p, off+int64(i)); err != nil {
					return err
				}
			}
		}
		off += int64(m)
	}
	if err := f.Truncate(n); err != nil {
		return err
	}
	return f.Sync()
}
