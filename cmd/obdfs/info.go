package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/obdfs/obdfs/layerfile"
)

func init() { register(&infoCmds{}) }

type infoCmds struct {
	Info infoCmd `cmd:"" help:"Describe overlaybd files: containers, header fields, index and jump-table statistics."`
}

type infoCmd struct {
	Files []string `arg:"" name:"FILE" help:"Layer files (tar-wrapped, ZFile or LSMT), or writable layer data/index files." type:"existingfile"`
}

func (c *infoCmd) Run() error {
	var errs []error
	for i, p := range c.Files {
		if i > 0 {
			fmt.Println()
		}
		if err := layerfile.DescribePath(os.Stdout, p); err != nil {
			fmt.Fprintf(os.Stdout, "%s: error: %v\n", p, err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
