package layerfile

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/obdfs/obdfs/internal/atomicfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/tarwrap"
	"github.com/obdfs/obdfs/zfile"
)

// WriteOptions choose the containers of a written layer file. The zero
// value writes the content as it is.
type WriteOptions struct {
	// ZFile, if not nil, compresses the content as a ZFile.
	ZFile *zfile.WriterOptions
	// KeepZFileHeader leaves the ZFile header as first written (flags
	// 0x13: readers use the trailer), as overlaybd-zfile does. By default
	// the header is rewritten with the final index fields, as
	// overlaybd-commit -z does.
	KeepZFileHeader bool
	// Tar wraps the result in overlaybd's tar form (as pushed to
	// registries).
	Tar bool
	// Replace allows replacing an existing file; by default an existing
	// path is an error.
	Replace bool
	// Mode is the file's permission bits (default 0644, what overlaybd's
	// tools create).
	Mode fs.FileMode
}

// Compression returns ZFile writer options from the overlaybd tools'
// flags: algorithm "lz4" or "zstd" (empty: lz4) and a block size in KiB
// (4, 8, 16, 32 or 64; 0: 4).
func Compression(algorithm string, blockKiB int) (*zfile.WriterOptions, error) {
	switch blockKiB {
	case 0:
		blockKiB = 4
	case 4, 8, 16, 32, 64:
	default:
		return nil, fmt.Errorf("block size %d KiB: must be 4, 8, 16, 32 or 64", blockKiB)
	}
	var alg zfile.Algorithm
	switch algorithm {
	case "", "lz4":
		alg = zfile.LZ4
	case "zstd":
		alg = zfile.Zstd
	default:
		return nil, fmt.Errorf("compression %q: must be lz4 or zstd", algorithm)
	}
	return &zfile.WriterOptions{Algorithm: alg, BlockSize: blockKiB << 10}, nil
}

// Write writes path through the containers o chooses: body writes the
// content (usually an LSMT layer; for a ZFile any bytes) to w. The file
// appears under path only complete and synced, so a failed or interrupted
// write never leaves a file that looks valid.
func Write(path string, o WriteOptions, body func(w io.Writer) error) error {
	if err := write(path, o, body); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// Commit writes src as a committed read-only layer (lsmt.Commit) to path
// through the containers o chooses. a carries the layer's uuid, parent
// uuid and message.
func Commit(path string, src lsmt.CommitSource, a lsmt.CommitArgs, o WriteOptions) error {
	return Write(path, o, func(w io.Writer) error {
		_, err := lsmt.Commit(w, src, a)
		return err
	})
}

// Copy writes what r holds to path through the containers o chooses
// (compressing a file into a ZFile, decompressing one into a plain file).
func Copy(path string, r io.Reader, o WriteOptions) error {
	return Write(path, o, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
}

func write(path string, o WriteOptions, body func(io.Writer) error) error {
	if !o.Replace {
		if _, err := os.Lstat(path); err == nil {
			return fs.ErrExist
		}
	}
	mode := o.Mode
	if mode == 0 {
		mode = 0o644
	}
	f, err := atomicfile.Create(path, mode)
	if err != nil {
		return err
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	var start int64
	if o.Tar {
		// The tar header needs the member's size: leave room, write it last.
		start = int64(len(tarwrap.Header(0, mode)))
		if _, err := bw.Write(make([]byte, start)); err != nil {
			return err
		}
	}
	var zw *zfile.Writer
	var w io.Writer = bw
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
	if zw != nil && !o.KeepZFileHeader {
		if _, err := f.WriteAt(zw.FinalHeader(), start); err != nil {
			return err
		}
	}
	if o.Tar {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return err
		}
		member := end - start
		if _, err := f.Write(tarwrap.Trailer(member)); err != nil {
			return err
		}
		if _, err := f.WriteAt(tarwrap.Header(member, mode), 0); err != nil {
			return err
		}
	}
	return f.Commit()
}
