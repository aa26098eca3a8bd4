package main

import (
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/zfile"
)

func init() { register(&mergeCmds{}) }

type mergeCmds struct {
	Merge mergeCmd `cmd:"" help:"Flatten a STACK into one read-only layer file, like overlaybd-merge."`
}

type mergeCmd struct {
	Compress bool   `default:"true" negatable:"" help:"Compress the output as a ZFile, as overlaybd-merge does by default (header not rewritten)."`
	UUID     string `name:"uuid" placeholder:"UUID" help:"UUID of the merged layer (default: null)."`
	Parent   string `short:"p" name:"parent-uuid" placeholder:"UUID" help:"Parent UUID (default: the bottom layer's parent)."`
	Message  string `short:"m" placeholder:"MSG" help:"Commit message (user tag, at most 256 bytes)."`
	writeFlags
	zfileOpts
	stackFlags
	Stack string `arg:"" name:"STACK" help:"Image config (*.json), layer files (comma-separated, bottom first), docker://REF or oci:DIR[:TAG]."`
	Out   string `arg:"" name:"OUT" help:"Merged layer file to write." type:"path"`
}

func (c *mergeCmd) Run() error {
	var zo *zfile.WriterOptions
	if c.Compress {
		var err error
		if zo, err = c.writerOptions(); err != nil {
			return err
		}
	}
	o, err := c.imageOptions(nil)
	if err != nil {
		return err
	}
	s, err := image.Open(c.Stack, o)
	if err != nil {
		return err
	}
	defer s.Close()
	args := lsmt.CommitArgs{UUID: c.UUID, ParentUUID: c.Parent, Message: c.Message}
	wo := c.options(zo)
	wo.KeepZFileHeader = true // overlaybd-merge does not rewrite it
	return hintForce(layerfile.Commit(c.Out, s.Merged(), args, wo))
}
