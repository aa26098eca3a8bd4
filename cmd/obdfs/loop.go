package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"

	"github.com/obdfs/obdfs/loopdev"
)

func init() { register(&loopCmds{}) }

type loopCmds struct {
	Loop struct {
		Attach loopAttachCmd `cmd:"" help:"Attach FILE to a free loop device and print the device (/dev/loopN)."`
		Detach loopDetachCmd `cmd:"" help:"Detach a loop device (deferred by the kernel while it is in use)."`
		Ls     loopLsCmd     `cmd:"" help:"List attached loop devices."`
	} `cmd:"" help:"Loop block devices over files (e.g. stacks served by obdfs mount)."`
}

type loopAttachCmd struct {
	RW        bool   `name:"rw" xor:"mode" help:"Read-write; fail if FILE cannot be opened for writing."`
	RO        bool   `name:"ro" xor:"mode" help:"Read-only."`
	DirectIO  string `name:"direct-io" enum:"on,off" default:"on" help:"Direct I/O from the loop driver to FILE (on: no second page cache, many requests in flight)."`
	BlockSize int    `name:"block-size" enum:"512,4096" default:"512" help:"Logical block size of the device."`
	Autoclear bool   `help:"Detach on the last close. The device must be opened by someone before this command exits, or it is detached at once."`
	File      string `arg:"" name:"FILE" type:"existingfile"`
}

func (c *loopAttachCmd) Run() error {
	o := loopdev.Options{DirectIO: c.DirectIO == "on", BlockSize: c.BlockSize, Autoclear: c.Autoclear}
	switch {
	case c.RW:
		o.Mode = loopdev.ReadWrite
	case c.RO:
		o.Mode = loopdev.ReadOnly
	}
	d, err := loopdev.Attach(c.File, o)
	if err != nil {
		return err
	}
	if d.ReadOnly && !c.RO {
		slog.Info("attached read-only: the file is not writable", "file", c.File, "device", d.Path)
	}
	if o.DirectIO && !d.DirectIO {
		slog.Warn("the kernel does not use direct I/O on this file", "file", c.File, "device", d.Path)
	}
	fmt.Println(d.Path)
	return nil
}

type loopDetachCmd struct {
	Backing string `name:"backing" placeholder:"FILE" help:"Detach only while DEV is still bound to FILE (same inode): a device name kept from earlier may serve someone else by now."`
	Device  string `arg:"" name:"DEV"`
}

func (c *loopDetachCmd) Run() error {
	detach := loopdev.Detach
	if c.Backing != "" {
		detach = func(dev string) (bool, error) { return loopdev.DetachBacking(dev, c.Backing) }
	}
	deferred, err := detach(c.Device)
	if err != nil {
		return err
	}
	if deferred {
		slog.Warn("device in use: the kernel detaches it on its last close", "device", c.Device)
	}
	return nil
}

type loopLsCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

func (c *loopLsCmd) Run() error {
	devs, err := loopdev.List()
	if err != nil {
		return err
	}
	if c.JSON {
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		if devs == nil {
			devs = []loopdev.Device{}
		}
		return e.Encode(devs)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSIZE\tRO\tDIO\tAUTOCLEAR\tBLOCK\tFILE")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\t%d\t%s\n", d.Path, d.Size, d.ReadOnly, d.DirectIO, d.Autoclear, d.BlockSize, d.BackingFile)
	}
	return tw.Flush()
}
