package build

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/obdfs/obdfs/tarwrap"
	"github.com/obdfs/obdfs/zfile"
)

// WriteOptions choose the containers of a committed layer file.
type WriteOptions struct {
	ZFile *zfile.WriterOptions // compress as a ZFile (header rewritten with the final index)
	Tar   bool                 // wrap in overlaybd's tar form, as pushed to registries
}

// WriteFile writes path through the chosen containers; body writes the LSMT
// content. The file appears under path only complete and synced (temp file,
// fsync, rename), replacing what was there.
//
// This is the layer-file write pipeline of cmd/obdfs's commit, kept small
// here until the shared layer-file package takes it over.
func WriteFile(path string, o WriteOptions, body func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("writing %s: %w", path, err)
		}
	}()
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	var start int64
	if o.Tar {
		start = int64(len(tarwrap.Header(0, 0o644)))
		if _, err := bw.Write(make([]byte, start)); err != nil {
			return err
		}
	}
	var w io.Writer = bw
	var zw *zfile.Writer
	if o.ZFile != nil {
		if zw, err = zfile.NewWriter(bw, *o.ZFile); err != nil {
			return err
		}
		w = zw
	}
	if err := body(w); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if zw != nil {
		if _, err := f.WriteAt(zw.FinalHeader(), start); err != nil {
			return err
		}
	}
	if o.Tar {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return err
		}
		if _, err := f.Write(tarwrap.Trailer(end - start)); err != nil {
			return err
		}
		if _, err := f.WriteAt(tarwrap.Header(end-start, 0o644), 0); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CommitFile commits the layer (see Commit) into path.
func (l *Layer) CommitFile(path string, args CommitArgs, o WriteOptions) error {
	return WriteFile(path, o, func(w io.Writer) error {
		_, err := l.Commit(w, args)
		return err
	})
}
