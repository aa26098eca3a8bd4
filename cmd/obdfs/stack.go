package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/alecthomas/kong"

	"github.com/obdfs/obdfs/fusefs"
	"github.com/obdfs/obdfs/image"
	"github.com/obdfs/obdfs/server"
)

func init() { register(&stackCmds{}) }

type stackCmds struct {
	Stack struct {
		Add stackAddCmd `cmd:"" help:"Serve another STACK as MOUNTPOINT/NAME."`
		Rm  stackRmCmd  `cmd:"" help:"Stop serving MOUNTPOINT/NAME (flushes and closes it)."`
		Ls  stackLsCmd  `cmd:"" help:"List the stacks of a mount."`
	} `cmd:"" help:"Add, remove and list the stacks of a running mount."`
}

func parseStacks(args []string) ([]server.Stack, error) {
	var out []server.Stack
	seen := map[string]bool{}
	for _, a := range args {
		name, spec, ok := strings.Cut(a, "=")
		if !ok || spec == "" {
			return nil, fmt.Errorf("%q: want NAME=STACK", a)
		}
		if err := fusefs.CheckName(name); err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("stack name %q given twice", name)
		}
		seen[name] = true
		out = append(out, server.Stack{Name: name, Spec: spec})
	}
	return out, nil
}

func call(mountpoint string, req server.Request) (*server.Response, error) {
	mp, err := server.CleanMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	return server.Call(server.SocketPath(mp), req)
}

type stackAddCmd struct {
	permFlags
	lazyFlags         // those given change this stack's; the others are the daemon's
	Mountpoint string `arg:"" name:"MOUNTPOINT" type:"path"`
	Stack      string `arg:"" name:"NAME=STACK"`
}

func (c *stackAddCmd) Run(ctx *kong.Context) error {
	st, err := parseStacks([]string{c.Stack})
	if err != nil {
		return err
	}
	// The daemon runs in another directory: relative paths are ours.
	spec, err := image.AbsSpec(st[0].Spec)
	if err != nil {
		return err
	}
	perm, err := c.permFlags.override()
	if err != nil {
		return err
	}
	lazy, err := c.lazyFlags.options(givenFlags(ctx))
	if err != nil {
		return err
	}
	_, err = call(c.Mountpoint, server.Request{Op: "add", Name: st[0].Name, Spec: spec, Perm: perm, Lazy: lazy})
	return err
}

type stackRmCmd struct {
	Force      bool   `help:"Remove even while the file is open (its users then get EIO)."`
	Mountpoint string `arg:"" name:"MOUNTPOINT" type:"path"`
	Name       string `arg:"" name:"NAME"`
}

func (c *stackRmCmd) Run() error {
	_, err := call(c.Mountpoint, server.Request{Op: "rm", Name: c.Name, Force: c.Force})
	return err
}

type stackLsCmd struct {
	JSON       bool   `name:"json" help:"Print JSON."`
	Mountpoint string `arg:"" name:"MOUNTPOINT" type:"path"`
}

func (c *stackLsCmd) Run() error {
	resp, err := call(c.Mountpoint, server.Request{Op: "ls"})
	if err != nil {
		return err
	}
	if c.JSON {
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		return e.Encode(resp.Stacks)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tLAYERS\tMODE\tOPEN\tSTACK")
	for _, s := range resp.Stacks {
		mode := "rw"
		if s.ReadOnly {
			mode = "ro"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\n", s.Name, s.Size, len(s.Layers), mode, s.Stats.OpenFiles, s.Spec)
	}
	return tw.Flush()
}
