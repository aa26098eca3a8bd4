// Command convertsrc writes a regular OCI image (gzip layers) into an OCI
// layout from directory trees, one layer per tree, for bench-convert:
//
//	convertsrc LAYOUT TAG PREFIX=DIR...
//
// Each DIR becomes a layer whose entries sit under PREFIX (e.g.
// usr/bin=/usr/bin). A PREFIX=DIR whose DIR is "-" writes a layer that
// deletes PREFIX (a whiteout).
package main

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/obdfs/obdfs/build"
	"github.com/obdfs/obdfs/convert"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: convertsrc LAYOUT TAG PREFIX=DIR...")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3:]); err != nil {
		fmt.Fprintln(os.Stderr, "convertsrc:", err)
		os.Exit(1)
	}
}

func run(layout, tag string, specs []string) error {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	tmp, err := os.MkdirTemp("", "convertsrc")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for i, s := range specs {
		prefix, dir, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("%q: want PREFIX=DIR", s)
		}
		f := path.Join(tmp, fmt.Sprintf("layer%d.tar", i))
		if err := layerTar(f, prefix, dir); err != nil {
			return err
		}
		l, err := tarball.LayerFromFile(f, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = []string{"/bin/sh"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	return convert.Write(context.Background(), "oci:"+layout+":"+tag, convert.Source{Image: img}, convert.RegistryOptions{})
}

// layerTar writes the tree dir as a tar with names under prefix (and the
// prefix's parent directories), or a whiteout of prefix when dir is "-".
func layerTar(out, prefix, dir string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if dir == "-" {
		d, b := path.Split(prefix)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: d + ".wh." + b, Mode: 0o644}); err != nil {
			return err
		}
		return tw.Close()
	}
	parts := strings.Split(prefix, "/")
	for i := 1; i < len(parts); i++ {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.Join(parts[:i], "/") + "/", Mode: 0o755}); err != nil {
			return err
		}
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { err := build.TarDir(dir, pw); pw.CloseWithError(err); done <- err }()
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		h.Name = path.Join(prefix, h.Name)
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag == tar.TypeLink {
			h.Linkname = path.Join(prefix, h.Linkname)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	if err := <-done; err != nil {
		return err
	}
	return tw.Close()
}
