package build

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// OpenTar returns the tar stream of a layer file, decompressing gzip and
// zstd (recognised by their magic numbers).
func OpenTar(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		return z, nil
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// OpenSource opens what `obdfs build` takes as a layer tar stream: "-"
// (standard input), a directory (tarred by TarDir in a goroutine that Close
// waits for, returning its error), or a tar file (plain, gzip, zstd).
func OpenSource(path string) (io.ReadCloser, error) {
	if path == "-" {
		r, err := OpenTar(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("standard input: %w", err)
		}
		return r, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		pr, pw := io.Pipe()
		d := &dirSource{PipeReader: pr, done: make(chan error, 1)}
		go func() {
			err := TarDir(path, pw)
			pw.CloseWithError(err)
			d.done <- err
		}()
		return d, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := OpenTar(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &fileSource{ReadCloser: r, f: f}, nil
}

type dirSource struct {
	*io.PipeReader
	done chan error
}

// Close stops the tarring goroutine (its writes fail) and waits for it.
func (d *dirSource) Close() error {
	d.PipeReader.Close()
	if err := <-d.done; err != nil && !errors.Is(err, io.ErrClosedPipe) {
		return err
	}
	return nil
}

type fileSource struct {
	io.ReadCloser
	f *os.File
}

func (s *fileSource) Close() error {
	err := s.ReadCloser.Close()
	if ferr := s.f.Close(); err == nil {
		err = ferr
	}
	return err
}

// TarDir writes the tree at dir to w as a PAX tar in the form Apply reads:
// numeric owners, full modes, nanosecond times, xattrs, devices, FIFOs,
// symlinks, hard links (by inode) and sparse-aware content. Names starting
// with .wh. are written as they are, so a tree can carry whiteouts.
// Sockets are skipped (tar cannot hold them).
func TarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		hdr := &tar.Header{
			Name:    rel,
			Mode:    int64(st.Mode & 0o7777),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: timeOf(st.Mtim),
			Format:  tar.FormatPAX,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag = tar.TypeDir
			hdr.Name = strings.TrimSuffix(rel, "/") + "/"
			if rel == "." {
				hdr.Name = "./"
			}
		case unix.S_IFREG:
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok && st.Nlink > 1 {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			} else {
				if st.Nlink > 1 {
					links[key] = rel
				}
				hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
			}
		case unix.S_IFLNK:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			return nil
		}
		if err := addXattrs(p, hdr); err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if n != hdr.Size {
				return fmt.Errorf("%s: changed size while being read", p)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func addXattrs(p string, hdr *tar.Header) error {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil
		}
		return fmt.Errorf("%s: listxattr: %w", p, err)
	}
	for _, k := range strings.Split(string(buf[:n]), "\x00") {
		if k == "" {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			return fmt.Errorf("%s: getxattr %s: %w", p, k, err)
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[xattrPAX+k] = string(v[:vn])
	}
	return nil
}

func timeOf(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec) }
