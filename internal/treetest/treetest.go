// Package treetest supports tests that build filesystem trees from OCI layer
// tars: generated tars covering every entry type and whiteout case, and an
// entry-by-entry snapshot of a tree to compare two extractions.
package treetest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is what a comparison looks at for one path.
type Entry struct {
	Type   string // reg, dir, symlink, char, block, fifo, socket
	Mode   uint32 // permission bits incl. setuid/setgid/sticky
	UID    uint32
	GID    uint32
	MTime  int64 // ns; not for symlinks' targets, for the link itself
	Size   int64
	SHA256 string // regular files
	Link   string // symlink target
	Rdev   uint64 // devices
	Nlink  uint64 // regular files: hard links inside the tree
	Xattrs map[string]string
}

func (e Entry) String() string {
	var x []string
	for k, v := range e.Xattrs {
		x = append(x, k+"="+hex.EncodeToString([]byte(v)))
	}
	sort.Strings(x)
	return fmt.Sprintf("%s mode=%04o uid=%d gid=%d mtime=%d size=%d sha=%.12s link=%q rdev=%d nlink=%d xattrs=%v",
		e.Type, e.Mode, e.UID, e.GID, e.MTime, e.Size, e.SHA256, e.Link, e.Rdev, e.Nlink, x)
}

// Snapshot walks root and describes every entry by its path relative to
// root ("." for root). Names in skip (relative paths) are left out with
// everything under them.
func Snapshot(root string, skip ...string) (map[string]Entry, error) {
	out := map[string]Entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		for _, s := range skip {
			if rel == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := Entry{Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, MTime: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Type, e.Size, e.Nlink = "reg", st.Size, st.Nlink
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
		case unix.S_IFDIR:
			e.Type = "dir"
		case unix.S_IFLNK:
			e.Type = "symlink"
			if e.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR:
			e.Type, e.Rdev = "char", st.Rdev
		case unix.S_IFBLK:
			e.Type, e.Rdev = "block", st.Rdev
		case unix.S_IFIFO:
			e.Type = "fifo"
		default:
			e.Type = "other"
		}
		if e.Xattrs, err = xattrs(p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out[rel] = e
		return nil
	})
	return out, err
}

func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, err
	}
	var m map[string]string
	for _, k := range strings.Split(string(buf[:n]), "\x00") {
		if k == "" || k == "security.selinux" {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", k, err)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = string(v[:vn])
	}
	return m, nil
}

// Diff lists the differences between two snapshots, at most max lines.
func Diff(want, got map[string]Entry, max int) []string {
	var out []string
	var names []string
	for n := range want {
		names = append(names, n)
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		w, wok := want[n]
		g, gok := got[n]
		switch {
		case !gok:
			out = append(out, fmt.Sprintf("%s: missing (want %v)", n, w))
		case !wok:
			out = append(out, fmt.Sprintf("%s: unexpected (%v)", n, g))
		case w.String() != g.String():
			out = append(out, fmt.Sprintf("%s:\n  want %v\n  got  %v", n, w, g))
		}
		if len(out) >= max {
			break
		}
	}
	return out
}

// TarEntry is one generated tar entry.
type TarEntry struct {
	Hdr  tar.Header
	Body []byte
}

// Tar writes entries as a PAX tar.
func Tar(entries []TarEntry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.Hdr
		h.Format = tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			panic(err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// Capability is a valid security.capability value (VFS_CAP_REVISION_2,
// effective, permitted cap_net_bind_service).
func Capability() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<10)
	return string(b)
}

var base = time.Date(2024, 3, 1, 12, 0, 0, 123456789, time.UTC)

func ts(i int) time.Time { return base.Add(time.Duration(i)*time.Hour + time.Duration(i*7919)) }

func dir(name string, mode int64, i int) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: ts(i)}}
}

func file(name string, mode int64, uid, gid, i int, body []byte) TarEntry {
	return TarEntry{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid, ModTime: ts(i)}, Body: body}
}

func text(s string) []byte { return []byte(s) }

// sparse is 3 MiB with data in two 4 KiB pieces and zeros elsewhere.
func sparse() []byte {
	b := make([]byte, 3<<20)
	copy(b[8192:], bytes.Repeat([]byte("sparse"), 700))
	copy(b[2<<20:], "tail block")
	return b
}

// Layers returns three layer tars covering every entry type, metadata kind
// and whiteout case: layer 1 builds a tree, layer 2 deletes, replaces and
// links into it, layer 3 makes directories opaque and re-creates whiteouts.
func Layers() [][]byte {
	long := "deep/" + strings.Repeat("a", 120) + "/" + strings.Repeat("b", 150) + ".txt"
	l1 := []TarEntry{
		dir("./", 0o755, 0),
		dir("bin/", 0o755, 1),
		file("bin/tool", 0o4755, 0, 0, 2, text("#!/bin/sh\necho setuid\n")),
		file("bin/sgid", 0o2711, 0, 50, 3, text("setgid")),
		dir("tmp/", 0o1777, 4),
		dir("etc/", 0o755, 5),
		file("etc/owned", 0o640, 1234, 5678, 6, text("numeric owner")),
		file("etc/empty", 0o600, 0, 0, 7, nil),
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/xattrs", Mode: 0o644, ModTime: ts(8), PAXRecords: map[string]string{
			"SCHILY.xattr.user.comment":        "hello",
			"SCHILY.xattr.trusted.overlay.foo": "bar",
		}}, Body: text("xattrs")},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/ping", Mode: 0o755, ModTime: ts(9), PAXRecords: map[string]string{
			"SCHILY.xattr.security.capability": Capability(),
		}}, Body: text("ping")},
		dir("data/", 0o755, 10),
		file("data/sparse.bin", 0o644, 0, 0, 10, sparse()),
		file("data/big.bin", 0o644, 0, 0, 11, bytes.Repeat([]byte("0123456789abcdef"), 1<<16)),
		{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/abs-link", Linkname: "/etc/owned", ModTime: ts(12)}},
		{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/rel-link", Linkname: "../bin/tool", ModTime: ts(13)}},
		{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/dangling", Linkname: "nowhere/at/all", ModTime: ts(14)}},
		{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: "bin/tool-hardlink", Linkname: "bin/tool"}},
		dir("dev/", 0o755, 15),
		{Hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: ts(16)}},
		{Hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda9", Mode: 0o660, Gid: 6, Devmajor: 8, Devminor: 9, ModTime: ts(17)}},
		{Hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o620, ModTime: ts(18)}},
		dir("deep/", 0o755, 19),
		dir(long[:strings.LastIndex(long, "/")+1], 0o755, 19),
		file(long, 0o644, 0, 0, 19, text("a long PAX name")),
		dir("gone-dir/", 0o755, 20),
		dir("gone-dir/sub/", 0o700, 21),
		file("gone-dir/sub/f", 0o644, 0, 0, 22, text("under a deleted directory")),
		file("gone-file", 0o644, 0, 0, 23, text("deleted by layer 2")),
		dir("opaque/", 0o755, 24),
		file("opaque/old1", 0o644, 0, 0, 25, text("hidden by the opaque marker")),
		dir("opaque/olddir/", 0o755, 26),
		file("opaque/olddir/x", 0o644, 0, 0, 27, text("hidden too")),
		dir("to-file/", 0o755, 28),
		file("to-file/child", 0o644, 0, 0, 29, text("its directory becomes a file")),
		file("to-dir", 0o644, 0, 0, 30, text("becomes a directory")),
		dir("shared/", 0o755, 31),
		file("shared/lower", 0o640, 7, 8, 31, text("hard-linked from layer 2")),
		file("modified", 0o644, 0, 0, 32, text("version 1")),
		dir("keep/", 0o750, 33),
		file("keep/a", 0o644, 0, 0, 34, text("kept")),
	}
	l2 := []TarEntry{
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: ".wh.gone-file", ModTime: ts(40)}},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: ".wh.gone-dir", ModTime: ts(41)}},
		file("to-file", 0o600, 0, 0, 42, text("was a directory")),
		dir("to-dir/", 0o711, 43),
		file("to-dir/child", 0o644, 0, 0, 44, text("under what was a file")),
		{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: "shared/upper-link", Linkname: "shared/lower"}},
		file("modified", 0o664, 3, 3, 45, text("version 2, longer")),
		dir("opaque/", 0o755, 46),
		file("opaque/new-before", 0o644, 0, 0, 47, text("created before the marker")),
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "opaque/.wh..wh..opq", ModTime: ts(48)}},
		file("opaque/new-after", 0o644, 0, 0, 49, text("created after the marker")),
		// No entry for keep/: its times stay those of layer 1.
		file("keep/b", 0o644, 0, 0, 50, text("added without the directory's entry")),
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "keep/.wh.a", ModTime: ts(51)}},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: ".wh.never-existed", ModTime: ts(52)}},
		// Replaces a regular file by a symlink and a symlink by a file.
		{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/empty", Linkname: "owned", ModTime: ts(53)}},
		file("etc/dangling", 0o644, 0, 0, 54, text("no longer a symlink")),
	}
	l3 := []TarEntry{
		// A same-layer entry survives its own whiteout.
		file("same-layer", 0o644, 0, 0, 60, text("kept: whiteouts hide lower layers only")),
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: ".wh.same-layer", ModTime: ts(61)}},
		// Re-create what layer 2 deleted.
		dir("gone-dir/", 0o700, 62),
		file("gone-dir/back", 0o644, 0, 0, 63, text("back again")),
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "to-dir/.wh..wh..opq", ModTime: ts(64)}},
		// Change metadata of an existing directory only.
		dir("bin/", 0o700, 65),
	}
	return [][]byte{Tar(l1), Tar(l2), Tar(l3)}
}

// Escapes are tars, each with one entry that tries to leave the root; every
// one must be refused. (Symlinked parents are not refused but resolved
// inside the root: see EscapeBySymlink.)
func Escapes() map[string][]byte {
	return map[string][]byte{
		"dotdot":          Tar([]TarEntry{file("../outside", 0o644, 0, 0, 0, text("x"))}),
		"inner-dotdot":    Tar([]TarEntry{file("a/../../outside", 0o644, 0, 0, 0, text("x"))}),
		"absolute":        Tar([]TarEntry{file("/outside", 0o644, 0, 0, 0, text("x"))}),
		"hardlink-out":    Tar([]TarEntry{{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "../../etc/passwd"}}}),
		"hardlink-abs":    Tar([]TarEntry{{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "/etc/passwd"}}}),
		"whiteout-out":    Tar([]TarEntry{{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../.wh.victim"}}}),
		"whiteout-dotdot": Tar([]TarEntry{{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "a/.wh..."}}}),
	}
}

// EscapeBySymlink is a tar whose symlinks point outside the root (absolute
// and by ".."), then writes through them: a container sees those targets
// inside its root, and so must the extraction.
func EscapeBySymlink(outside string) []byte {
	// The targets exist inside the root too, every directory with an entry
	// (implicitly made ones get the current time: not comparable).
	var entries []TarEntry
	parts := strings.Split(strings.Trim(outside, "/"), "/")
	for i := range parts {
		entries = append(entries, dir(strings.Join(parts[:i+1], "/")+"/", 0o755, 70+i))
	}
	return Tar(append(entries, []TarEntry{
		{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: outside}},
		{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "up", Linkname: "../../../../../../../.." + outside}},
		file("abs/pwned-abs", 0o644, 0, 0, 0, text("x")),
		file("up/pwned-up", 0o644, 0, 0, 0, text("x")),
		{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: "abs/hl", Linkname: "abs/pwned-abs"}},
	}...))
}
