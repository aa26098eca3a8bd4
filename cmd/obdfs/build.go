package main

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/obdfs/obdfs/build"
	"github.com/obdfs/obdfs/diskimport"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/zfile"
)

func init() { register(&buildCmds{}) }

type buildCmds struct {
	Build  buildCmd  `cmd:"" help:"Build one layer from a directory or a layer tar (gzip/zstd too; OCI whiteouts honoured) over an optional base STACK: ext4 through FUSE, a loop device and the kernel, then committed. Needs root."`
	Import importCmd `cmd:"" name:"import" help:"Import a VM disk (raw, or anything qemu-img reads: qcow2, vmdk, vhdx) as a committed layer holding only allocated non-zero blocks; over --base, only the blocks that differ."`
}

// layerOutFlags are the output flags of build and import.
type layerOutFlags struct {
	Compress bool   `short:"z" help:"Compress the layer as a ZFile."`
	UUID     string `name:"uuid" placeholder:"UUID" help:"Layer UUID (default: random)."`
	Message  string `short:"m" placeholder:"MSG" help:"Commit message (user tag, at most 256 bytes)."`
	writeFlags
	zfileOpts
}

// writeOptions checks the flags, and that OUT may be written before any
// work is done.
func (f layerOutFlags) writeOptions(out string) (layerfile.WriteOptions, error) {
	if !f.Force {
		if _, err := os.Lstat(out); err == nil {
			return layerfile.WriteOptions{}, hintForce(fmt.Errorf("%s: %w", out, fs.ErrExist))
		}
	}
	if len(f.Message) > 256 {
		return layerfile.WriteOptions{}, fmt.Errorf("message is %d bytes, at most 256", len(f.Message))
	}
	var zo *zfile.WriterOptions
	if f.Compress {
		var err error
		if zo, err = f.writerOptions(); err != nil {
			return layerfile.WriteOptions{}, err
		}
	}
	return f.options(zo), nil
}

// openBase opens --base, or returns nil.
func openBase(spec string, sf stackFlags) (*image.Stack, error) {
	if spec == "" {
		return nil, nil
	}
	io, err := sf.imageOptions(nil)
	if err != nil {
		return nil, err
	}
	return image.Open(spec, io)
}

type buildCmd struct {
	Base    string `placeholder:"STACK" help:"Stack the layer goes on (default: none, a new ext4 filesystem)."`
	VSize   string `name:"vsize" default:"64GiB" placeholder:"SIZE" help:"Virtual size of a first layer (sparse)."`
	WorkDir string `placeholder:"DIR" help:"Directory for the writable layer and mount points (default: the system temp dir)."`
	layerOutFlags
	stackFlags
	Src string `arg:"" name:"SRC" help:"Directory, or layer tar (plain, gzip, zstd); - reads the tar from standard input."`
	Out string `arg:"" name:"OUT" help:"Layer file to write." type:"path"`
}

func (c *buildCmd) Run() error {
	vsize, err := parseSize(c.VSize)
	if err != nil || vsize <= 0 || vsize%512 != 0 {
		return fmt.Errorf("build: --vsize %q: want a positive multiple of 512 bytes such as 64GiB", c.VSize)
	}
	wo, err := c.writeOptions(c.Out)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	base, err := openBase(c.Base, c.stackFlags)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	if base != nil {
		defer base.Close()
	}
	src, err := build.OpenSource(c.Src)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	st, err := build.Build(c.Out, src, c.Src,
		build.Options{Base: base, VirtualSize: vsize, UUID: c.UUID, WorkDir: c.WorkDir},
		build.CommitArgs{UUID: c.UUID, Message: c.Message}, wo)
	if cerr := src.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return hintForce(err)
	}
	fmt.Printf("%s: %d entries (%d whiteouts), %s of file data\n", c.Out, st.Entries, st.Whiteouts, humanBytes(st.Bytes))
	return nil
}

type importCmd struct {
	Base    string `placeholder:"STACK" help:"Stack the disk derives from: only blocks that differ are written; the layer's parent is the base's top."`
	WorkDir string `placeholder:"DIR" help:"Directory for the temporary raw conversion and writable layer (default: the system temp dir)."`
	layerOutFlags
	stackFlags
	Disk string `arg:"" name:"DISK" help:"Disk image (raw, qcow2, vmdk, vhdx, ...)." type:"existingfile"`
	Out  string `arg:"" name:"OUT" help:"Layer file to write." type:"path"`
}

func (c *importCmd) Run() error {
	wo, err := c.writeOptions(c.Out)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	base, err := openBase(c.Base, c.stackFlags)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if base != nil {
		defer base.Close()
	}
	bar := newProgress(os.Stderr)
	l, st, err := diskimport.Import(c.Disk, diskimport.Options{Base: base, UUID: c.UUID, WorkDir: c.WorkDir,
		Progress: func(done, total int64) { bar.update("import", done, total) }})
	bar.done()
	if err != nil {
		return err
	}
	defer l.Close()
	if err := layerfile.Commit(c.Out, l, lsmt.CommitArgs{UUID: l.UUID(), Message: c.Message}, wo); err != nil {
		return hintForce(err)
	}
	fmt.Printf("%s: %s disk of %s: %s written, %s discarded, %s examined\n", c.Out, st.Format,
		humanBytes(st.VirtualSize), humanBytes(st.Written), humanBytes(st.Discarded), humanBytes(st.Examined))
	return nil
}
