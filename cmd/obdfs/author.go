package main

// Authoring commands, compatible in meaning with overlaybd's tools
// (overlaybd-create, overlaybd-commit, overlaybd-zfile; docs/tools.md §1).

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
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

// zfileOpts are the compression flags shared by commit, merge, push and zfile.
type zfileOpts struct {
	Algorithm string `enum:"lz4,zstd" default:"lz4" help:"ZFile compression: lz4 or zstd."`
	BS        int    `name:"bs" default:"4" placeholder:"KIB" help:"ZFile block size in KiB: 4, 8, 16, 32 or 64."`
}

func (o zfileOpts) writerOptions() (*zfile.WriterOptions, error) {
	zo, err := layerfile.Compression(o.Algorithm, o.BS)
	if err != nil {
		return nil, fmt.Errorf("--algorithm %s --bs %d: %w", o.Algorithm, o.BS, err)
	}
	return zo, nil
}

// writeFlags are the output flags shared by commit, merge and zfile.
type writeFlags struct {
	Tar   bool `short:"t" help:"Wrap the output in overlaybd's tar form (as pushed to registries)."`
	Force bool `short:"f" help:"Replace the output file if it exists."`
}

func (f writeFlags) options(zo *zfile.WriterOptions) layerfile.WriteOptions {
	return layerfile.WriteOptions{ZFile: zo, Tar: f.Tar, Replace: f.Force}
}

// hintForce adds the flag to use when the output exists.
func hintForce(err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w (use -f to replace it)", err)
	}
	return err
}

type commitCmd struct {
	Compress bool   `short:"z" help:"Compress the output as a ZFile (per-block CRC, header rewritten at the end)."`
	UUID     string `name:"uuid" placeholder:"UUID" help:"UUID of the committed layer (default: null, as overlaybd-commit)."`
	Parent   string `short:"p" name:"parent-uuid" placeholder:"UUID" help:"Parent UUID (default: the writable layer's)."`
	Message  string `short:"m" placeholder:"MSG" help:"Commit message (user tag, at most 256 bytes)."`
	writeFlags
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
		var err error
		if zo, err = c.writerOptions(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	// Read-only, and refused while a writer holds the layer: a layer in
	// use would be committed as whatever its log held at that moment.
	rw, err := lsmt.OpenReadOnly(c.Data, c.Index, lsmt.ReadOnlyOptions{Quiesced: true})
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	defer rw.Close()
	args := lsmt.CommitArgs{UUID: c.UUID, ParentUUID: c.Parent, Message: c.Message}
	return hintForce(layerfile.Commit(c.Out, rw, args, c.options(zo)))
}
