package main

import "fmt"

func init() { register(&versionCmds{}) }

type versionCmds struct {
	Version versionCmd `cmd:"" help:"Print the obdfs version."`
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println("obdfs", version)
	return nil
}
