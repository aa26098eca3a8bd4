package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/testlayer"
)

const (
	vsize = 64 << 20
	uuid1 = "0bd0e2e0-0000-4000-8000-000000000001"
	uuid2 = "0bd0e2e0-0000-4000-8000-000000000002"
)

// tree maps every regular file under dir to its sha256.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == "lost+found" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			rel, _ := filepath.Rel(dir, p)
			out[rel] = hex.EncodeToString(h[:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d files, want %d: %v", what, len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s: sha256 %q, want %q", what, k, got[k], v)
		}
	}
}

// TestExt4Layers builds a two-layer compressed ext4 image with the obdfs
// CLI alone, writing through FUSE and through FUSE → loop → ext4, restarts
// the daemon, commits, and checks the read-only stack shows the same tree.
func TestExt4Layers(t *testing.T) {
	needRoot(t)
	needs.Commands(t, "mkfs.ext4", "mount", "dd", "blockdev")
	w := t.TempDir()
	p := func(n string) string { return filepath.Join(w, n) }

	// Layer 1: an ext4 made by mkfs.ext4 -d, copied into a writable layer
	// through the FUSE file with dd, then committed compressed.
	src := p("src")
	os.MkdirAll(filepath.Join(src, "sub/dir"), 0o755)
	os.WriteFile(filepath.Join(src, "big.bin"), testlayer.Random(1, 3<<20+777), 0o644)
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from layer 1\n"), 0o644)
	os.WriteFile(filepath.Join(src, "sub/dir/x.txt"), bytes.Repeat([]byte("x"), 10000), 0o644)
	want := tree(t, src)
	raw := p("base.ext4")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(raw, vsize)
	must(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, raw)

	mustObdfs(t, "create", "--size", "67108864", "--uuid", uuid1, p("l1.data"), p("l1.index"))
	cfg1 := rwConfig(t, p("l1.json"), p("l1.data"), p("l1.index"))
	mp := mount(t, "w="+cfg1)
	if fi, err := os.Stat(filepath.Join(mp, "w")); err != nil || fi.Mode() != 0o644 || fi.Size() != vsize {
		t.Fatalf("writable stack: %v %v", fi, err)
	}
	must(t, "dd", "if="+raw, "of="+filepath.Join(mp, "w"), "bs=1M", "conv=notrunc,fsync", "status=none")
	mustObdfs(t, "umount", mp)
	mustObdfs(t, "commit", "-z", "--uuid", uuid1, p("l1.data"), p("l1.index"), p("l1.zfile"))

	// Layer 2: writes through loop + ext4 on a writable upper.
	mustObdfs(t, "create", "--size", "67108864", "-u", uuid1, "--uuid", uuid2, p("l2.data"), p("l2.index"))
	cfg2 := rwConfig(t, p("l2.json"), p("l2.data"), p("l2.index"), p("l1.zfile"))
	mountAt(t, mp, "w="+cfg2)
	dev := loopAttach(t, "--rw", "--direct-io=on", filepath.Join(mp, "w"))
	e := mountExt4(t, dev, false)
	sameTree(t, "layer 1 through loop+ext4", tree(t, e), want)
	newData := testlayer.Random(2, 1<<20+3)
	os.WriteFile(filepath.Join(e, "new.bin"), newData, 0o644)
	os.WriteFile(filepath.Join(e, "hello.txt"), []byte("changed in layer 2\n"), 0o644)
	os.Remove(filepath.Join(e, "sub/dir/x.txt"))
	want = tree(t, e)
	must(t, "umount", e)
	mustObdfs(t, "loop", "detach", dev)
	mustObdfs(t, "umount", mp)

	// Restart the daemon on the same files: the log replays.
	mountAt(t, mp, "w="+cfg2)
	rwSHA := fileSHA(t, filepath.Join(mp, "w"))
	dev = loopAttach(t, filepath.Join(mp, "w"))
	e = mountExt4(t, dev, true)
	sameTree(t, "after daemon restart", tree(t, e), want)
	must(t, "umount", e)
	mustObdfs(t, "loop", "detach", dev)
	mustObdfs(t, "umount", mp)

	// Commit and serve read-only: same bytes, same tree.
	mustObdfs(t, "commit", "-z", "--uuid", uuid2, p("l2.data"), p("l2.index"), p("l2.zfile"))
	mountAt(t, mp, "ro="+p("l1.zfile")+","+p("l2.zfile"))
	if fi, _ := os.Stat(filepath.Join(mp, "ro")); fi == nil || fi.Mode() != 0o444 {
		t.Errorf("committed stack mode: %v", fi)
	}
	if got := fileSHA(t, filepath.Join(mp, "ro")); got != rwSHA {
		t.Errorf("committed stack sha256 %s, writable stack had %s", got, rwSHA)
	}
	dev = loopAttach(t, filepath.Join(mp, "ro"))
	e = mountExt4(t, dev, true)
	sameTree(t, "committed read-only stack", tree(t, e), want)
	must(t, "umount", e)
	mustObdfs(t, "loop", "detach", dev)
}

// TestKill9: fsynced data survives SIGKILL of the daemon; the dead mount
// gives errors, not hangs, and `obdfs umount -l` clears it even with a
// loop device attached.
func TestKill9(t *testing.T) {
	needRoot(t)
	w := t.TempDir()
	p := func(n string) string { return filepath.Join(w, n) }
	mustObdfs(t, "create", "--size", "67108864", p("l.data"), p("l.index"))
	cfg := rwConfig(t, p("l.json"), p("l.data"), p("l.index"))
	mp := mount(t, "w="+cfg)
	file := filepath.Join(mp, "w")

	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	synced := testlayer.Random(3, 4<<20)
	if _, err := f.WriteAt(synced, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 2<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	clear(synced[1<<20 : 1<<20+64<<10])
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(testlayer.Random(4, 1<<20), 32<<20) // not synced: may or may not survive
	f.Close()
	dev := loopAttach(t, "--ro", file)

	pid := daemonPid(mp)
	if pid == 0 {
		t.Fatal("daemon not found")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(10 * time.Second); daemonPid(mp) != 0; {
		if time.Now().After(deadline) {
			t.Fatal("daemon survived SIGKILL")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Every access fails at once: a dead connection, not a hang.
	done := make(chan error, 1)
	go func() { _, err := os.ReadFile(file); done <- err }()
	select {
	case err := <-done:
		// ENOTCONN once the connection is dead; ECONNABORTED for a request
		// that raced with the kernel aborting it.
		if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
			t.Errorf("read on the dead mount: %v, want ENOTCONN or ECONNABORTED", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("read on the dead mount hangs")
	}
	if _, err := obdfs(t, "mount", mp, "w="+cfg); err == nil || !strings.Contains(err.Error(), "dead FUSE mount") {
		t.Errorf("mount over the dead mount: %v", err)
	}
	if _, err := obdfs(t, "umount", mp); err == nil {
		t.Errorf("umount of a busy dead mount succeeded without -l")
	}
	mustObdfs(t, "umount", "-l", mp)
	mustObdfs(t, "loop", "detach", dev)
	if mounted(mp) {
		t.Fatal("still mounted after umount -l")
	}

	mountAt(t, mp, "w="+cfg)
	got := make([]byte, len(synced))
	g, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, synced) {
		t.Errorf("fsynced data lost or changed after kill -9 and restart")
	}
}

// TestStackRuntime adds and removes stacks through the control socket.
func TestStackRuntime(t *testing.T) {
	needRoot(t)
	needFixtures(t)
	mp := mount(t)
	l := func(p string) string { return filepath.Join(fixtures, p) }
	mustObdfs(t, "stack", "add", mp, "a="+l("d/l1.lsmt")+","+l("d/l2.lsmt")+","+l("d/l3.lsmt"))
	if _, err := obdfs(t, "stack", "add", mp, "a="+l("d/l1.lsmt")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("adding a taken name: %v", err)
	}
	if _, err := obdfs(t, "stack", "add", mp, "b="+l("missing.lsmt")); err == nil || !strings.Contains(err.Error(), "missing.lsmt") {
		t.Errorf("adding a missing file: %v", err)
	}
	if got := fileSHA(t, filepath.Join(mp, "a")); got != shaStack {
		t.Errorf("added stack sha256 %s", got)
	}
	f, err := os.Open(filepath.Join(mp, "a"))
	if err != nil {
		t.Fatal(err)
	}
	ls := mustObdfs(t, "stack", "ls", mp)
	if !strings.Contains(ls, "67108864") || !regexpLine(ls, `^a\s+67108864\s+3\s+ro\s+1\s`) {
		t.Errorf("stack ls:\n%s", ls)
	}
	if _, err := obdfs(t, "stack", "rm", mp, "a"); err == nil || !strings.Contains(err.Error(), "open") {
		t.Errorf("rm while open: %v", err)
	}
	var stats struct {
		Stacks []struct {
			Name  string
			Stats struct {
				ReadBytes int64 `json:"read_bytes"`
			}
			Layers []struct{ Name string }
		}
	}
	if err := json.Unmarshal([]byte(mustObdfs(t, "stats", "--json", mp)), &stats); err != nil {
		t.Fatal(err)
	}
	// Every byte was served once; under load the kernel may ask for a page
	// again (a readahead racing the reader), so allow up to one request more.
	if len(stats.Stacks) != 1 || stats.Stacks[0].Stats.ReadBytes < vsize || stats.Stacks[0].Stats.ReadBytes > vsize+1<<20 || len(stats.Stacks[0].Layers) != 3 {
		t.Errorf("stats: %+v", stats)
	}
	mustObdfs(t, "stack", "rm", "--force", mp, "a")
	f.Close()
	if _, err := os.Stat(filepath.Join(mp, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed stack still visible: %v", err)
	}
	mustObdfs(t, "stack", "add", mp, "a="+l("c/base.zstd.zfile"))
	if got := fileSHA(t, filepath.Join(mp, "a")); got != shaBase {
		t.Errorf("re-added stack sha256 %s", got)
	}
	if out := mustObdfs(t, "stats", mp); !strings.Contains(out, "base.zstd.zfile") || !strings.Contains(out, "zfile") {
		t.Errorf("stats:\n%s", out)
	}
}

// TestSIGTERM: SIGTERM flushes (even unsynced writes), unmounts and exits.
func TestSIGTERM(t *testing.T) {
	needRoot(t)
	w := t.TempDir()
	p := func(n string) string { return filepath.Join(w, n) }
	mustObdfs(t, "create", "--size", "67108864", p("l.data"), p("l.index"))
	cfg := rwConfig(t, p("l.json"), p("l.data"), p("l.index"))
	mp := mount(t, "w="+cfg)
	data := testlayer.Random(5, 2<<20)
	f, err := os.OpenFile(filepath.Join(mp, "w"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(data, 5<<20)
	f.Close()
	pid := daemonPid(mp)
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(20 * time.Second); mounted(mp) || daemonPid(mp) != 0; {
		if time.Now().After(deadline) {
			t.Fatal("daemon did not stop on SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mountAt(t, mp, "w="+cfg)
	got := make([]byte, len(data))
	g, err := os.Open(filepath.Join(mp, "w"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.ReadAt(got, 5<<20); err != nil || !bytes.Equal(got, data) {
		t.Errorf("data written before SIGTERM: err=%v equal=%v", err, bytes.Equal(got, data))
	}
}
