package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/obdfs/obdfs/convert"
)

func init() { register(&convertCmds{}) }

type convertCmds struct {
	Convert convertCmd `cmd:"" help:"Convert a regular OCI/Docker image (or every image of an index) into an overlaybd image: each layer applied through ext4 over the layers below, committed and tar-wrapped. Needs root."`
}

type convertCmd struct {
	Compress bool   `short:"z" help:"Compress the layers as ZFiles."`
	VSize    string `name:"vsize" default:"64GiB" placeholder:"SIZE" help:"Virtual size of the image's disk (sparse)."`
	Platform string `placeholder:"OS/ARCH[/VARIANT]" help:"Convert only this platform of an index (default: every platform)."`
	CacheDir string `default:"/var/cache/obdfs" placeholder:"DIR" help:"Cache of converted layers (under DIR/convert), keyed by the chain of source diff IDs: images sharing base layers convert them once."`
	CacheMax string `default:"16GiB" placeholder:"SIZE" help:"Bound of the converted-layer cache; least recently used layers beyond it are removed after a conversion (0: unbounded)."`
	NoCache  bool   `help:"Use a temporary cache, removed at the end."`
	WorkDir  string `placeholder:"DIR" help:"Directory for writable layers and mount points (default: the system temp dir)."`
	Insecure bool   `help:"Allow plain HTTP and unverified TLS to registries."`
	zfileOpts
	Src string `arg:"" name:"SRC" help:"docker://REF, oci:DIR[:TAG], or a docker save archive."`
	Dst string `arg:"" name:"DST" help:"docker://REF or oci:DIR[:TAG]."`
}

func (c *convertCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	vsize, err := parseSize(c.VSize)
	if err != nil || vsize <= 0 || vsize%512 != 0 {
		return fmt.Errorf("convert: --vsize %q: want a positive multiple of 512 bytes such as 64GiB", c.VSize)
	}
	cacheMax, err := parseSize(c.CacheMax)
	if err != nil {
		return fmt.Errorf("convert: --cache-max %q: want a size such as 16GiB", c.CacheMax)
	}
	o := convert.Options{VirtualSize: vsize, CacheMax: cacheMax, CacheDir: filepath.Clean(c.CacheDir), WorkDir: c.WorkDir, Context: ctx}
	if c.NoCache {
		o.CacheDir = ""
	}
	if c.Compress {
		zo, err := c.writerOptions()
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		o.ZFile = zo
	}
	if c.Platform != "" {
		p, err := v1.ParsePlatform(c.Platform)
		if err != nil {
			return fmt.Errorf("convert: --platform %q: %w", c.Platform, err)
		}
		o.Platform = p
	}
	bar := newProgress(os.Stderr)
	o.Progress = func(e convert.Event) {
		label := fmt.Sprintf("layer %d/%d %s", e.Layer, e.Layers, e.Phase)
		if e.Platform != "" {
			label = e.Platform + " " + label
		}
		bar.update(label, e.Done, e.Total)
	}
	ro := convert.RegistryOptions{Insecure: c.Insecure}
	src, err := convert.Open(ctx, c.Src, ro)
	if err != nil {
		return err
	}
	conv, err := convert.New(o)
	if err != nil {
		return err
	}
	defer conv.Close()
	out, err := conv.Convert(src)
	bar.done()
	if err != nil {
		return err
	}
	ro.Progress = func(done, total int64) { bar.update("push", done, total) }
	err = convert.Write(ctx, c.Dst, out, ro)
	bar.done()
	if err != nil {
		return err
	}
	s := conv.Stats()
	secs := s.Elapsed.Seconds()
	fmt.Fprintf(os.Stderr, "%s -> %s: %d image(s), %d layers (%d from the cache), %s of files applied in %.1fs (%.1f MB/s), %s of layers\n",
		c.Src, c.Dst, s.Images, s.Layers, s.Cached, humanBytes(s.SourceBytes), secs, float64(s.SourceBytes)/1e6/max(secs, 1e-3), humanBytes(s.OutputBytes))
	return nil
}
