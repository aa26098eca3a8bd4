// Command obdfs serves overlaybd block images as raw virtual disk files and
// authors overlaybd layers. Run `obdfs --help` for the commands.
//
// Each command group lives in its own file and registers itself with
// register() from an init function, so main.go holds only the wiring.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/alecthomas/kong"
)

// commands collects the command groups registered by the other files.
var commands kong.Plugins

// register adds a struct whose fields are kong commands (`cmd:""`).
func register(group any) { commands = append(commands, group) }

type cli struct {
	LogLevel slog.Level `help:"Log level (debug, info, warn, error)." default:"info" placeholder:"LEVEL"`
	kong.Plugins
}

// logLevel is the level of the default logger; overlaybd's config may
// set it when --log-level is left at info.
var logLevel = new(slog.LevelVar)

func main() {
	var c cli
	c.Plugins = commands
	ctx := kong.Parse(&c,
		kong.Name("obdfs"),
		kong.Description("Serve overlaybd block images (LSMT layers, ZFile-compressed, tar-wrapped) as raw virtual disks, and build them.\n\n"+
			"A STACK is an overlaybd image config (*.json with lowers/upper) or layer files separated by commas, bottom first (l1.commit,l2.commit)."),
		kong.UsageOnError(),
		// --readahead-kb -1 and the like: a flag's value may start with "-".
		kong.WithHyphenPrefixedParameters(true),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	logLevel.Set(c.LogLevel)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})))
	if err := ctx.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "obdfs: %v\n", err)
		os.Exit(1)
	}
}
