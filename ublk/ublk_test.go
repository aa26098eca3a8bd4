package ublk

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/ublk/internal/uapi"

	"github.com/obdfs/obdfs/internal/testlayer"
)

// These tests need a kernel with ublk and root; on the host they skip. They
// run for real in a VM: test/vm/run.sh boots Debian's kernel with ublk_drv and
// runs this package's test binary inside.

func needUblk(t *testing.T) {
	t.Helper()
	needs.Root(t, "ublk control commands need CAP_SYS_ADMIN")
	needs.Device(t, ControlPath, "ublk (make test-vm runs these tests on real kernels)")
}

// alignedBuf is page-aligned memory for O_DIRECT.
func alignedBuf(t *testing.T, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

func start(t *testing.T, d disk.Disk, o Options) *Device {
	t.Helper()
	dev, err := Start(d, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("device %d: flags %#x user-copy %v", dev.ID(), dev.Flags(), dev.UserCopy())
	t.Cleanup(func() { dev.Close() })
	return dev
}

func assertGone(t *testing.T, id int) {
	t.Helper()
	for _, p := range []string{fmt.Sprintf("/dev/ublkb%d", id), fmt.Sprintf("/dev/ublkc%d", id), fmt.Sprintf("/sys/class/ublk-char/ublkc%d", id)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s still exists after Close", p)
		}
	}
	infos, err := List()
	if err != nil {
		t.Fatal(err)
	}
	for _, inf := range infos {
		if inf.ID == id {
			t.Errorf("device %d still listed: %+v", id, inf)
		}
	}
}

func TestFeatures(t *testing.T) {
	needUblk(t)
	f, err := Features()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GET_FEATURES: %#x", f)
}

func TestReadWrite(t *testing.T) {
	needUblk(t)
	const size = 8 << 20
	tests := []struct {
		name string
		opts Options
	}{
		{"default", Options{}},
		{"buffers-2queues", Options{NoUserCopy: true, Queues: 2, Depth: 16, MaxIO: 64 << 10}},
		{"depth1", Options{Queues: 1, Depth: 1, NoRecovery: true}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := testlayer.Random(uint64(i+1), size)
			mem := disk.NewMem(content, false)
			dev := start(t, mem, tt.opts)
			if tt.opts.NoUserCopy && dev.UserCopy() {
				t.Fatal("USER_COPY negotiated although NoUserCopy was set")
			}
			f, err := os.OpenFile(dev.BlockPath(), os.O_RDWR|unix.O_DIRECT, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Whole device, in odd-sized chunks so requests of many sizes arrive.
			buf := alignedBuf(t, 1<<20)
			h := sha256.New()
			for off, k := int64(0), 0; off < size; k++ {
				n := min(int64(4096*(1+k%37)), size-off)
				if _, err := f.ReadAt(buf[:n], off); err != nil {
					t.Fatalf("read %d+%d: %v", off, n, err)
				}
				h.Write(buf[:n])
				off += n
			}
			if got, want := h.Sum(nil), sha256.Sum256(content); !bytes.Equal(got, want[:]) {
				t.Fatalf("device sha256 %x, want %x", got, want)
			}
			// O_DIRECT writes, 512-aligned and unaligned to 4K, then read back.
			writes := []struct{ off, n int64 }{{0, 512}, {4096 * 3, 65536}, {1<<20 + 512, 4096 + 512}, {size - 4096, 4096}}
			for j, w := range writes {
				p := testlayer.Random(uint64(100+j), int(w.n))
				copy(buf, p)
				if _, err := f.WriteAt(buf[:w.n], w.off); err != nil {
					t.Fatalf("write %d+%d: %v", w.off, w.n, err)
				}
				copy(content[w.off:], p)
			}
			if err := f.Sync(); err != nil { // FLUSH
				t.Fatalf("fsync: %v", err)
			}
			for _, w := range writes {
				clear(buf[:w.n])
				if _, err := f.ReadAt(buf[:w.n], w.off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf[:w.n], content[w.off:w.off+w.n]) {
					t.Fatalf("read back at %d differs", w.off)
				}
			}
			// PUNCH_HOLE on a block device becomes WRITE_ZEROES (unmap allowed).
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 2<<20, 1<<20); err != nil {
				t.Errorf("punch hole: %v", err)
			} else {
				clear(content[2<<20 : 3<<20])
			}
			f.Close()
			id := dev.ID()
			if err := dev.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			assertGone(t, id)
			got := make([]byte, size)
			mem.ReadAt(got, 0)
			if !bytes.Equal(got, content) {
				t.Fatal("disk content after Close differs from what was written")
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	needUblk(t)
	content := testlayer.Random(7, 1<<20+1000) // not a whole number of sectors
	dev := start(t, disk.NewMem(content, true), Options{Queues: 1, Depth: 4})
	ro, err := os.ReadFile(fmt.Sprintf("/sys/block/ublkb%d/ro", dev.ID()))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("/sys/block/.../ro = %q, want 1", ro)
	}
	size, _ := os.ReadFile(fmt.Sprintf("/sys/block/ublkb%d/size", dev.ID()))
	if strings.TrimSpace(string(size)) != strconv.Itoa((1<<20+1000)/512) {
		t.Errorf("size = %q sectors, want %d", size, (1<<20+1000)/512)
	}
	if f, err := os.OpenFile(dev.BlockPath(), os.O_WRONLY, 0); err == nil {
		_, werr := f.WriteAt(make([]byte, 512), 0)
		serr := f.Sync()
		f.Close()
		if werr == nil && serr == nil {
			t.Error("write to a read-only device succeeded")
		}
	}
	got, err := os.ReadFile(dev.BlockPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content[:len(got)]) || len(got) != 1<<20+1000-1000%512 {
		t.Errorf("read %d bytes, content mismatch or wrong length", len(got))
	}
}

// Detach (another process's `obdfs ublk detach`) stops the device; the server
// sees Done and deletes it.
func TestDetach(t *testing.T) {
	needUblk(t)
	dev := start(t, disk.NewMem(make([]byte, 1<<20), false), Options{Queues: 1, Depth: 8})
	id := dev.ID()
	errc := make(chan error, 1)
	go func() { errc <- Detach(id, 10*time.Second) }()
	select {
	case <-dev.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("device not stopped by Detach")
	}
	if err := dev.Close(); err != nil && !errors.Is(err, unix.ENODEV) {
		t.Fatalf("Close after Detach: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Detach: %v", err)
	}
	assertGone(t, id)
}

// checkNoLeak fails if goroutines started after before are still running
// (Close must end every queue, worker and reaper goroutine).
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// Every failure during creation undoes what was made: the kernel refuses
// SET_PARAMS, or START_DEV (no BASIC params) after the queues have fetched.
func TestStartFailureLeavesNothing(t *testing.T) {
	needUblk(t)
	tests := []struct {
		name string
		hook *bool
		opts Options
	}{
		{"SET_PARAMS refused", &testHook.badParams, Options{Queues: 2, Depth: 8}},
		{"START_DEV refused", &testHook.skipSetParams, Options{Queues: 2, Depth: 8}},
		{"START_DEV refused, buffers", &testHook.skipSetParams, Options{Queues: 1, Depth: 4, NoUserCopy: true, NoRecovery: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := 9
			tt.opts.ID = &id
			before := runtime.NumGoroutine()
			*tt.hook = true
			dev, err := Start(disk.NewMem(make([]byte, 1<<20), false), tt.opts)
			*tt.hook = false
			if err == nil {
				dev.Close()
				t.Fatal("Start succeeded although the kernel refused a step")
			}
			t.Logf("Start: %v", err)
			var ce *CmdError
			if !errors.As(err, &ce) || !errors.Is(err, unix.EINVAL) {
				t.Errorf("error %v: want the kernel's EINVAL as a CmdError", err)
			}
			assertGone(t, id)
			checkNoLeak(t, before)
			// The id is free again: a real device can take it.
			d := start(t, disk.NewMem(make([]byte, 1<<20), true), Options{ID: &id, Queues: 1, Depth: 4})
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			assertGone(t, id)
		})
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	needUblk(t)
	before := runtime.NumGoroutine()
	dev, err := Start(disk.NewMem(testlayer.Random(3, 1<<20), false), Options{Queues: 2, Depth: 16})
	if err != nil {
		t.Fatal(err)
	}
	id := dev.ID()
	if _, err := os.ReadFile(dev.BlockPath()); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil { // idempotent
		t.Fatalf("second Close: %v", err)
	}
	assertGone(t, id)
	checkNoLeak(t, before)
}

func TestOptionsRejected(t *testing.T) {
	bad := -1
	for _, o := range []Options{{Depth: 5000}, {Queues: -1}, {MaxIO: 1000}, {ID: &bad}} {
		if _, err := Start(disk.NewMem(nil, true), o); err == nil || errors.Is(err, ErrNoUblk) {
			t.Errorf("Start(%+v) = %v, want an option error", o, err)
		}
	}
}

// The recovery test runs a server in a child process (this test binary),
// kills it, queues a read while the device has no server, and takes over.
const helperEnv = "OBDFS_UBLK_HELPER"

func recoverContent() []byte { return testlayer.Random(42, 4<<20) }

func TestHelperServe(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper for TestRecover")
	}
	dev, err := Start(disk.NewMem(recoverContent(), false), Options{Queues: 1, Depth: 8})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ID", dev.ID())
	select {} // serve until killed
}

func TestRecover(t *testing.T) {
	needUblk(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServe$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 64)
	n, _ := out.Read(line)
	var id int
	if _, err := fmt.Sscanf(string(line[:n]), "ID %d", &id); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q", line[:n])
	}
	inf, err := func() (Info, error) {
		c, err := openControl()
		if err != nil {
			return Info{}, err
		}
		defer c.close()
		return infoOf(c, uint32(id))
	}()
	if err != nil {
		t.Fatal(err)
	}
	if inf.Flags&uapi.FUserRecovery == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		Detach(id, 5*time.Second)
		t.Skipf("kernel did not grant USER_RECOVERY (flags %#x)", inf.Flags)
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Cleanup(func() { Detach(id, 5*time.Second) })

	// The block device stays while no server runs; a read issued now waits.
	if _, err := os.Stat(fmt.Sprintf("/dev/ublkb%d", id)); err != nil {
		t.Fatalf("block device gone after the server died: %v", err)
	}
	content := recoverContent()
	type result struct {
		b   []byte
		err error
	}
	rc := make(chan result, 1)
	go func() {
		f, err := os.OpenFile(fmt.Sprintf("/dev/ublkb%d", id), os.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			rc <- result{nil, err}
			return
		}
		defer f.Close()
		b, _ := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		_, err = f.ReadAt(b, 1<<20)
		c := bytes.Clone(b)
		unix.Munmap(b)
		rc <- result{c, err}
	}()
	select {
	case r := <-rc:
		t.Logf("read finished before recovery (err %v); kernel did not hold it", r.err)
	case <-time.After(500 * time.Millisecond):
	}
	dev, err := Recover(id, disk.NewMem(content, false), Options{})
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	select {
	case r := <-rc:
		if r.err != nil {
			t.Errorf("read across recovery: %v", r.err)
		} else if !bytes.Equal(r.b, content[1<<20:2<<20]) {
			t.Error("read across recovery returned wrong data")
		}
	case <-time.After(30 * time.Second):
		t.Error("read issued before recovery did not complete after it")
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertGone(t, id)
}
