package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// TestOneWriterPerLayer: a writable layer served by one daemon is refused to
// every other writer — a second daemon, the same daemon under another name
// (also through a second config in another directory), `commit`, `create` —
// with an error naming the data file and the daemon's pid; a read-only `cat`
// still works. Once the first daemon is gone the layer can be served again.
func TestOneWriterPerLayer(t *testing.T) {
	needRoot(t)
	w := t.TempDir()
	p := func(n string) string { return filepath.Join(w, n) }
	mustObdfs(t, "create", "--size", "67108864", p("l.data"), p("l.index"))
	cfg := rwConfig(t, p("l.json"), p("l.data"), p("l.index"))
	os.Mkdir(p("other"), 0o755)
	cfg2 := rwConfig(t, p("other/l.json"), "../l.data", "../l.index") // the same files, relative

	mpA := mount(t, "w="+cfg)
	pidA := daemonPid(mpA)
	if pidA == 0 {
		t.Fatal("daemon not found")
	}
	wf, err := os.OpenFile(filepath.Join(mpA, "w"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = wf.WriteAt(bytes.Repeat([]byte("A"), 4096), 0)
	if err := errors.Join(err, wf.Sync(), wf.Close()); err != nil {
		t.Fatal(err)
	}
	holder := "open for writing by pid " + strconv.Itoa(pidA)
	refused := func(what string, args ...string) {
		t.Helper()
		out, err := obdfs(t, args...)
		if err == nil {
			t.Fatalf("%s: accepted beside the serving daemon (%s)", what, out)
		}
		if !strings.Contains(err.Error(), p("l.data")) || !strings.Contains(err.Error(), holder) {
			t.Fatalf("%s: error does not name the data file and %q:\n%v", what, holder, err)
		}
	}
	mpB := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mpB, 0o755)
	t.Cleanup(func() { unmount(t, mpB) })
	refused("second daemon", "mount", mpB, "w="+cfg)
	refused("stack add to the same daemon", "stack", "add", mpA, "w2="+cfg)
	refused("stack add through another config", "stack", "add", mpA, "w3="+cfg2)
	refused("commit", "commit", p("l.data"), p("l.index"), p("l.commit"))
	if _, err := os.Stat(p("l.commit")); err == nil {
		t.Fatal("a refused commit left its output")
	}
	if _, err := obdfs(t, "create", "--size", "4096", p("l.data"), p("l.index")); err == nil {
		t.Fatal("create over a served layer succeeded")
	}
	out, err := obdfs(t, "cat", "--length", "4096", cfg)
	if err != nil || out != strings.Repeat("A", 4096) {
		t.Fatalf("cat beside the writer: %v (%d bytes)", err, len(out))
	}
	if ls := mustObdfs(t, "stack", "ls", mpA); strings.Contains(ls, "w2") || strings.Contains(ls, "w3") {
		t.Fatalf("refused stacks listed:\n%s", ls)
	}

	unmount(t, mpA)
	mountAt(t, mpB, "w="+cfg)
	got, err := os.ReadFile(filepath.Join(mpB, "w"))
	if err != nil || !bytes.Equal(got[:4096], bytes.Repeat([]byte("A"), 4096)) {
		t.Fatalf("second daemon after the first stopped: %v", err)
	}
}

// alignedBuf is a page-aligned buffer for O_DIRECT.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := 4096 - int(uintptr(unsafe.Pointer(&b[0]))&4095)
	return b[off%4096 : off%4096+n]
}

// TestReadersBesideWriter: `obdfs cat` runs against a layer being written
// through FUSE and a direct-I/O loop device all succeed and show what was
// fsynced before they started; the layer reopens with every fsynced write.
func TestReadersBesideWriter(t *testing.T) {
	needRoot(t)
	w := t.TempDir()
	p := func(n string) string { return filepath.Join(w, n) }
	mustObdfs(t, "create", "--size", strconv.Itoa(vsize), p("l.data"), p("l.index"))
	cfg := rwConfig(t, p("l.json"), p("l.data"), p("l.index"))
	mp := mount(t, "w="+cfg)
	dev := loopAttach(t, "--rw", "--direct-io=on", filepath.Join(mp, "w"))

	model := make([]byte, vsize)
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(64 << 10)
	head := testlayer.Random(7, 4096)
	copy(buf, head)
	if _, err := f.WriteAt(buf[:4096], 0); err != nil {
		t.Fatal(err)
	}
	copy(model, head)
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}

	var writer, readersWG sync.WaitGroup
	stop := make(chan struct{})
	writes := 0
	writer.Add(1)
	go func() { // the writer: 64 KiB O_DIRECT writes, fsynced in fours
		defer writer.Done()
		r := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			default:
			}
			off := int64(1+r.IntN(vsize/(64<<10)-1)) * 64 << 10
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			if _, err := f.WriteAt(buf, off); err != nil {
				t.Error(err)
				return
			}
			copy(model[off:], buf)
			if writes++; writes%4 == 0 {
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	const readers, runs = 2, 50
	errs := make(chan error, readers*runs)
	for range readers {
		readersWG.Add(1)
		go func() {
			defer readersWG.Done()
			for range runs {
				out, err := obdfs(t, "cat", "--length", "4096", cfg)
				if err == nil && out != string(head) {
					err = fmt.Errorf("cat: %d bytes, not the fsynced head", len(out))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	readersWG.Wait()
	close(stop)
	writer.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Errorf("cat beside the writer: %v", err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d cat runs failed", failed, readers*runs)
	}
	t.Logf("%d writes beside %d cat runs", writes, readers*runs)
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mustObdfs(t, "loop", "detach", dev)
	unmount(t, mp)

	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	mountAt(t, mp, "w="+cfg)
	if got := fileSHA(t, filepath.Join(mp, "w")); got != sum(model) {
		t.Fatalf("after remount sha256 %s, the fsynced writes give %s", got, sum(model))
	}
}
