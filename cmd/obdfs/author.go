package main

// Authoring commands, compatible in meaning with overlaybd's tools
// (overlaybd-create, overlaybd-commit, overlaybd-zfile; spec §6.1).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/tarwrap"
	"github.com/obdfs/obdfs/zfile"
)

func init() { register(&authorCmds{}) }

type authorCmds struct {
	Create createCmd `cmd:"" help:"Create a writable layer (data + index files), like overlaybd-create."`
	Commit commitCmd `cmd:"" help:"Commit a writable layer into a read-only layer file, like overlaybd-commit."`
	Zfile  zfileCmd  `cmd:"" name:"zfile" help:"Compress a file into a ZFile, decompress (-x) or verify one, like overlaybd-zfile."`
}

type createCmd struct {
	Sparse bool   `short:"s" help:"Sparse writable layer, like overlaybd-create -s: the data file holds the disk at its virtual offsets (header + VSIZE bytes, holes unwritten); the index file stays empty."`
	Parent string `short:"u" name:"parent-uuid" placeholder:"UUID" help:"Parent layer UUID."`
	UUID   string `name:"uuid" placeholder:"UUID" help:"Layer UUID (default: random)."`
	Size   int64  `name:"size" placeholder:"BYTES" help:"Virtual size in bytes (a multiple of 512); overrides VSIZE_GIB."`
	Data   string `arg:"" name:"DATA" help:"Data file to create (must not exist)." type:"path"`
	Index  string `arg:"" name:"INDEX" help:"Index file to create (must not exist)." type:"path"`
	GiB    int64  `arg:"" optional:"" name:"VSIZE_GIB" help:"Virtual size in GiB; 0 (default) inherits it from the layers below."`
}

func (c *createCmd) Run() error {
	size := c.GiB << 30
	if c.GiB < 0 || c.GiB > 1<<20 {
		return fmt.Errorf("create: VSIZE_GIB %d out of range", c.GiB)
	}
	if c.Size != 0 {
		size = c.Size
	}
	if size < 0 || size%512 != 0 {
		return fmt.Errorf("create: virtual size %d is not a non-negative multiple of 512", size)
	}
	rw, err := lsmt.Create(c.Data, c.Index, lsmt.CreateOptions{
		VirtualSize: size, UUID: c.UUID, ParentUUID: c.Parent, Sparse: c.Sparse,
	})
	if err != nil {
		return err
	}
	return rw.Close()
}

// zfileOpts are the compression flags shared by commit and zfile.
type zfileOpts struct {
	Algorithm string `enum:"lz4,zstd" default:"lz4" help:"ZFile compression: lz4 or zstd."`
	BS        int    `name:"bs" default:"4" placeholder:"KIB" help:"ZFile block size in KiB: 4, 8, 16, 32 or 64."`
}

func (o zfileOpts) writerOptions() (zfile.WriterOptions, error) {
	switch o.BS {
	case 4, 8, 16, 32, 64:
	default:
		return zfile.WriterOptions{}, fmt.Errorf("--bs %d: must be 4, 8, 16, 32 or 64 (KiB)", o.BS)
	}
	alg := zfile.LZ4
	if o.Algorithm == "zstd" {
		alg = zfile.Zstd
	}
	return zfile.WriterOptions{Algorithm: alg, BlockSize: o.BS << 10}, nil
}

type commitCmd struct {
	Compress bool   `short:"z" help:"Compress the output as a ZFile (per-block CRC, header rewritten at the end)."`
	Tar      bool   `short:"t" help:"Wrap the output in overlaybd's tar form (as pushed to registries)."`
	UUID     string `name:"uuid" placeholder:"UUID" help:"UUID of the committed layer (default: null, as overlaybd-commit)."`
	Parent   string `short:"p" name:"parent-uuid" placeholder:"UUID" help:"Parent UUID (default: the writable layer's)."`
	Message  string `short:"m" placeholder:"MSG" help:"Commit message (user tag, at most 256 bytes)."`
	Force    bool   `short:"f" help:"Replace OUT if it exists."`
	zfileOpts
	Data  string `arg:"" name:"DATA" help:"Writable layer data file." type:"existingfile"`
	Index string `arg:"" name:"INDEX" help:"Writable layer index file." type:"existingfile"`
	Out   string `arg:"" name:"OUT" help:"Committed layer file to write." type:"path"`
}

func (c *commitCmd) Run() error {
	if len(c.Message) > 256 {
		return fmt.Errorf("commit: message is %d bytes, at most 256", len(c.Message))
	}
	var zo *zfile.WriterOptions
	if c.Compress {
		o, err := c.writerOptions()
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		zo = &o
	}
	rw, err := lsmt.OpenRW(c.Data, c.Index)
	if err != nil {
		return err
	}
	defer rw.Close()
	args := lsmt.CommitArgs{UUID: c.UUID, ParentUUID: c.Parent, Message: c.Message}
	return writeLayerFile(c.Out, c.Force, c.Tar, zo, func(w io.Writer) error {
		_, err := lsmt.Commit(w, rw, args)
		return err
	})
}

// writeLayerFile writes OUT through the optional ZFile and tar containers.
// The output appears under its name only when complete and synced, so a
// failed or interrupted run never leaves a layer file that looks valid.
func writeLayerFile(out string, force, wrap bool, zo *zfile.WriterOptions, body func(io.Writer) error) error {
	return writeLayerFileOpts(out, force, wrap, zo, true, body)
}

// writeLayerFileOpts is writeLayerFile; overwriteHeader says whether the
// ZFile header is rewritten with the final index fields (overlaybd-commit
// does, overlaybd-zfile does not).
func writeLayerFileOpts(out string, force, wrap bool, zo *zfile.WriterOptions, overwriteHeader bool, body func(io.Writer) error) (err error) {
	if !force {
		if _, err := os.Lstat(out); err == nil {
			return fmt.Errorf("%s: exists (use -f to replace it)", out)
		}
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	var start int64
	if wrap {
		start = int64(len(tarwrap.Header(0, 0o644)))
		if _, err := bw.Write(make([]byte, start)); err != nil {
			return err
		}
	}
	var zw *zfile.Writer
	var w io.Writer = bw
	if zo != nil {
		if zw, err = zfile.NewWriter(bw, *zo); err != nil {
			return err
		}
		w = zw
	}
	if err := body(w); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if zw != nil && overwriteHeader {
		if _, err := f.WriteAt(zw.FinalHeader(), start); err != nil {
			return err
		}
	}
	if wrap {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return err
		}
		member := end - start
		if _, err := f.Write(tarwrap.Trailer(member)); err != nil {
			return err
		}
		if _, err := f.WriteAt(tarwrap.Header(member, 0o644), 0); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return err
	}
	return syncDir(filepath.Dir(out))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
