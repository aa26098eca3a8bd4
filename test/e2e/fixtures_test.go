package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/server"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// TestFixtures serves the upstream-made fixtures and checks them through
// FUSE, a loop device and qemu.
func TestFixtures(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	f := func(p string) string { return filepath.Join(fixtures, p) }
	stack := f("d/l1.lsmt") + "," + f("d/l2.lsmt") + "," + f("d/l3.lsmt")
	mp := mount(t, "stack="+stack, "lz4="+f("b/base.lz4.zfile"), "zstd="+f("c/base.zstd.zfile"), "l12="+f("d/l1.lsmt")+","+f("d/l2.lsmt"))

	for _, tc := range []struct{ name, sha string }{
		{"stack", shaStack}, {"lz4", shaBase}, {"zstd", shaBase}, {"l12", shaL12},
	} {
		p := filepath.Join(mp, tc.name)
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != 64<<20 || fi.Mode() != 0o444 {
			t.Errorf("%s: stat %v %v", tc.name, fi, err)
		}
		if got := fileSHA(t, p); got != tc.sha {
			t.Errorf("%s through FUSE: sha256 %s, want %s", tc.name, got, tc.sha)
		}
	}

	t.Run("loop", func(t *testing.T) {
		for _, dio := range []string{"on", "off"} {
			dev := loopAttach(t, "--direct-io="+dio, filepath.Join(mp, "stack"))
			// Auto mode: the file is read-only, so is the device.
			if ro := strings.TrimSpace(must(t, "blockdev", "--getro", dev)); ro != "1" {
				t.Errorf("%s over a read-only stack: ro=%s", dev, ro)
			}
			if got := fileSHA(t, dev); got != shaStack {
				t.Errorf("%s (direct-io=%s): sha256 %s, want %s", dev, dio, got, shaStack)
			}
			// --backing refuses a device bound to another file and leaves
			// it attached.
			if _, err := obdfs(t, "loop", "detach", "--backing", filepath.Join(mp, "lz4"), dev); err == nil || !strings.Contains(err.Error(), "serves another file") {
				t.Errorf("loop detach --backing with another file: %v", err)
			}
			mustObdfs(t, "loop", "detach", "--backing", filepath.Join(mp, "stack"), dev)
			// Stale now (the number may serve another package's test).
			if _, err := obdfs(t, "loop", "detach", "--backing", filepath.Join(mp, "stack"), dev); err == nil || !strings.Contains(err.Error(), "not an attached loop device") {
				t.Errorf("second loop detach --backing: %v", err)
			}
		}
		if _, err := obdfs(t, "loop", "attach", "--rw", filepath.Join(mp, "stack")); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("loop attach --rw on a read-only stack: %v", err)
		}
	})

	t.Run("qemu", func(t *testing.T) {
		needs.Commands(t, "qemu-img", "qemu-io")
		p := filepath.Join(mp, "stack")
		var info struct {
			Format      string `json:"format"`
			VirtualSize int64  `json:"virtual-size"`
		}
		if err := json.Unmarshal([]byte(must(t, "qemu-img", "info", "--output=json", p)), &info); err != nil {
			t.Fatal(err)
		}
		if info.Format != "raw" || info.VirtualSize != 64<<20 {
			t.Errorf("qemu-img info: %+v", info)
		}
		raw := filepath.Join(t.TempDir(), "cat.raw")
		mustObdfs(t, "cat", "-o", raw, stack)
		must(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", p, raw)
		// The way a VM opens its disk: O_DIRECT, io_uring, image locking on.
		opts := "driver=raw,file.driver=file,file.filename=" + p + ",file.aio=io_uring,file.cache.direct=on,file.locking=on"
		must(t, "qemu-img", "info", "--image-opts", opts)
		out := must(t, "qemu-io", "-r", "--image-opts", opts, "-c", "read -P 0 0x3F01000 4096", "-c", "read 0 64M")
		if strings.Contains(out, "fail") || strings.Contains(out, "Pattern verification failed") {
			t.Errorf("qemu-io: %s", out)
		}
	})
}

// TestBadInput: bad specs fail the mount with a message naming the file and
// leave no mount behind; a corrupted block is EIO for its range only.
func TestBadInput(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	f := func(p string) string { return filepath.Join(fixtures, p) }
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)
	garbage := filepath.Join(dir, "garbage.lsmt")
	os.WriteFile(garbage, bytes.Repeat([]byte("not a layer "), 1000), 0o644)
	for _, tc := range []struct{ name, arg, want string }{
		{"missing", "a=" + filepath.Join(dir, "nope.lsmt"), "nope.lsmt"},
		{"garbage", "a=" + garbage, "garbage.lsmt"},
		// l3's parent uuid is l2's, not l1's. (A reversed l2,l1 is not
		// caught: l1 has a null parent uuid, which lsmt.VerifyOrder skips.)
		{"order", "a=" + f("d/l1.lsmt") + "," + f("d/l3.lsmt") + "," + f("d/l2.lsmt"), "parent uuid"},
		{"noname", "=" + f("d/l1.lsmt"), "bad stack name"},
		{"nospec", "a=", "NAME=STACK"},
		{"badname", "a/b=" + f("d/l1.lsmt"), "bad stack name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := obdfs(t, "mount", mp, tc.arg)
			if err == nil {
				unmount(t, mp)
				t.Fatalf("mount %s succeeded", tc.arg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("mount %s: error does not name %q: %v", tc.arg, tc.want, err)
			}
			if mounted(mp) {
				unmount(t, mp)
				t.Errorf("a failed mount left %s mounted", mp)
			}
		})
	}

	t.Run("corrupt-block", func(t *testing.T) {
		// Flip bytes in the middle of the compressed data of a ZFile.
		b, err := os.ReadFile(f("b/base.lz4.zfile"))
		if err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(dir, "corrupt.zfile")
		for i := 200000; i < 200016; i++ {
			b[i] ^= 0x5a
		}
		os.WriteFile(bad, b, 0o644)
		want := testlayer.ExpectedDisk(t, "expected-base.raw.zst")
		mp := mount(t, "bad="+bad)
		fd, err := unix.Open(filepath.Join(mp, "bad"), unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		buf := aligned(64 << 10)
		var eio, good int
		for off := 0; off < len(want); off += len(buf) {
			n, err := unix.Pread(fd, buf, int64(off))
			switch {
			case errors.Is(err, syscall.EIO):
				eio++
			case err != nil:
				t.Fatalf("pread %d: %v", off, err)
			case !bytes.Equal(buf[:n], want[off:off+n]):
				t.Fatalf("wrong data at %d (garbage instead of EIO)", off)
			default:
				good++
			}
		}
		if eio == 0 || eio > 2 || good == 0 {
			t.Errorf("%d chunks EIO, %d good; want the corrupted range only to fail", eio, good)
		}
		log, _ := os.ReadFile(server.LogPath(mp))
		if !strings.Contains(string(log), "corrupt.zfile") || !strings.Contains(string(log), "read failed") {
			t.Errorf("daemon log does not name the layer:\n%s", log)
		}
	})
}

func aligned(n int) []byte {
	b := make([]byte, n+4096)
	for i := range 4096 {
		if addr(b[i:])%4096 == 0 {
			return b[i : i+n]
		}
	}
	return b[:n]
}
