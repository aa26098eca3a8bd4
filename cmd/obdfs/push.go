package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/obdfs/obdfs/layerfile"
	"github.com/obdfs/obdfs/remote"
	"github.com/obdfs/obdfs/zfile"
)

func init() { register(&pushCmds{}) }

type pushCmds struct {
	Push pushCmd `cmd:"" help:"Publish committed layer files as an overlaybd image (tar-wrapped blobs, uncompressed-tar media type, overlaybd annotations) that overlaybd and accelerated-container-image consume."`
}

type pushCmd struct {
	Compress bool `short:"z" help:"ZFile-compress layers that are plain LSMT files before pushing (ZFile and tar-wrapped layers are pushed as they are)."`
	zfileOpts
	Layers   []string `name:"layer" required:"" placeholder:"FILE" help:"Committed layer file (repeat, bottom first)." type:"existingfile"`
	Docker   bool     `name:"docker-media-types" help:"Write a Docker schema2 manifest instead of an OCI one."`
	FsType   string   `name:"fs-type" placeholder:"TYPE" help:"Filesystem inside the image (ext4, erofs), written as the blob-fs-type annotation."`
	Insecure bool     `help:"Allow plain HTTP and unverified TLS to the registry."`
	Platform string   `default:"linux/amd64" placeholder:"OS/ARCH[/VARIANT]" help:"Platform written in the image config."`
	Ref      string   `arg:"" name:"REF" help:"docker://HOST/REPO[:TAG] (the docker:// may be left out)."`
}

func (c *pushCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	layers := c.Layers
	if c.Compress {
		zo, err := c.writerOptions()
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		tmp, err := os.MkdirTemp("", "obdfs-push")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		layers = nil
		for i, l := range c.Layers {
			out, err := compressIfRaw(l, filepath.Join(tmp, fmt.Sprintf("layer%d", i)), zo)
			if err != nil {
				return fmt.Errorf("push: %w", err)
			}
			layers = append(layers, out)
		}
	}
	bar := newProgress(os.Stderr)
	d, err := remote.Push(ctx, c.Ref, layers, remote.PushOptions{
		Options:          remote.Options{Insecure: c.Insecure, Platform: c.Platform},
		DockerMediaTypes: c.Docker,
		FsType:           c.FsType,
		Progress:         func(done, total int64) { bar.update("push", done, total) },
	})
	bar.done()
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", strings.TrimPrefix(c.Ref, "docker://"), d)
	return nil
}

// compressIfRaw returns path itself for a ZFile or tar-wrapped layer, else
// writes a ZFile of it to out and returns out.
func compressIfRaw(path, out string, zo *zfile.WriterOptions) (string, error) {
	f, err := layerfile.OpenPath(path, layerfile.Options{})
	if err != nil {
		return "", err
	}
	defer f.Close()
	if f.Kind.Tar || f.Kind.ZFile {
		return path, nil
	}
	if err := layerfile.Copy(out, io.NewSectionReader(f.Member, 0, f.Member.Size()), layerfile.WriteOptions{ZFile: zo}); err != nil {
		return "", fmt.Errorf("%s: compressing: %w", path, err)
	}
	return out, nil
}
