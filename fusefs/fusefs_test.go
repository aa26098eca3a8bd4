package fusefs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/fusefs"
	"github.com/obdfs/obdfs/internal/fusetest"
	"github.com/obdfs/obdfs/internal/leakcheck"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/internal/testlayer"
)

func TestMain(m *testing.M) { os.Exit(fusetest.Main(m)) }

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type mnt struct {
	dir  string
	root *fusefs.Root
	srv  *fusefs.Server
	log  *logBuf
}

// mount serves disks in a fresh directory and unmounts in Cleanup (lazily
// if something still holds a file).
func mount(t *testing.T, disks map[string]disk.Disk) *mnt {
	t.Helper()
	needs.FUSE(t)
	m := &mnt{dir: t.TempDir(), log: &logBuf{}}
	m.root = fusefs.NewRoot(slog.New(slog.NewTextHandler(m.log, nil)))
	for name, d := range disks {
		if _, err := m.root.Add(name, d); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := fusefs.Mount(m.dir, m.root, fusefs.MountOptions{URing: fusetest.URing()})
	if err != nil {
		t.Fatal(err)
	}
	m.srv = srv
	t.Cleanup(func() { m.unmount(t) })
	if want := map[string]string{"on": "io_uring", "off": "/dev/fuse"}[fusetest.URing()]; srv.Transport() != want {
		t.Fatalf("transport %s, want %s", srv.Transport(), want)
	}
	return m
}

// --fuse-uring=on fails, naming the reason, when the kernel does not offer
// FUSE over io_uring (the classic run, where enable_uring is off); auto
// falls back to /dev/fuse.
func TestURingNotOffered(t *testing.T) {
	needs.FUSE(t)
	if ok, _ := fusefs.URingOffered(); ok {
		t.Skip("the kernel offers FUSE over io_uring now (enable_uring=Y): the io_uring run covers this")
	}
	dir := t.TempDir()
	root := fusefs.NewRoot(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := fusefs.Mount(dir, root, fusefs.MountOptions{URing: "on"}); err == nil || !strings.Contains(err.Error(), "enable_uring") {
		t.Fatalf("URing on: %v, want an error naming enable_uring", err)
	}
	srv, err := fusefs.Mount(dir, root, fusefs.MountOptions{URing: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Transport() != "/dev/fuse" {
		t.Errorf("auto without io_uring: transport %s", srv.Transport())
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	if _, err := fusefs.Mount(dir, root, fusefs.MountOptions{URing: "sometimes"}); err == nil {
		t.Fatal("URing sometimes: no error")
	}
}

func (m *mnt) unmount(t *testing.T) {
	if m.srv == nil {
		return
	}
	if err := m.srv.Unmount(); err != nil {
		t.Logf("unmount %s: %v; detaching lazily", m.dir, err)
		unix.Unmount(m.dir, unix.MNT_DETACH)
	}
	m.srv.Wait()
	m.srv = nil
	if err := m.root.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

func TestReadWholeFile(t *testing.T) {
	content := testlayer.Random(1, 8<<20+1234) // not a multiple of the page size
	m := mount(t, map[string]disk.Disk{"ro": disk.NewMem(content, true), "rw": disk.NewMem(content, false)})
	for _, tc := range []struct {
		name string
		mode os.FileMode
	}{{"ro", 0o444}, {"rw", 0o644}} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(m.dir, tc.name)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != int64(len(content)) || fi.Mode() != tc.mode {
				t.Errorf("stat: size %d mode %v, want %d %v", fi.Size(), fi.Mode(), len(content), tc.mode)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, content) {
				t.Errorf("content differs")
			}
			// O_DIRECT reads bypass the page cache and reach Read with
			// aligned offsets, several in flight.
			f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := alignedBuf(1 << 20)
			n, err := f.ReadAt(buf, 4<<20)
			if err != nil || n != len(buf) || !bytes.Equal(buf, content[4<<20:5<<20]) {
				t.Errorf("O_DIRECT read: n=%d err=%v equal=%v", n, err, bytes.Equal(buf[:n], content[4<<20:4<<20+n]))
			}
		})
	}
	names, err := os.ReadDir(m.dir)
	if err != nil || len(names) != 2 {
		t.Errorf("readdir: %v %v", names, err)
	}
}

func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := 4096 - int(uintptrOf(b)%4096)
	return b[off%4096:][:n]
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	m := mount(t, map[string]disk.Disk{"ro": disk.NewMem(make([]byte, 1<<20), true)})
	p := filepath.Join(m.dir, "ro")
	if _, err := os.OpenFile(p, os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open O_RDWR: %v, want EROFS", err)
	}
	if err := os.Truncate(p, 0); err == nil {
		t.Errorf("truncate succeeded")
	}
	if _, err := os.OpenFile(p, os.O_RDONLY|os.O_TRUNC, 0); err == nil {
		t.Errorf("open O_TRUNC succeeded")
	}
}

func TestWritable(t *testing.T) {
	const size = 4 << 20
	d := disk.NewMem(testlayer.Random(2, size), false)
	m := mount(t, map[string]disk.Disk{"rw": d})
	p := filepath.Join(m.dir, "rw")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := make([]byte, size)
	d.ReadAt(want, 0)

	data := testlayer.Random(3, 300000)
	if _, err := f.WriteAt(data, 12345); err != nil {
		t.Fatal(err)
	}
	copy(want[12345:], data)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	clear(want[1<<20 : 1<<20+64<<10])

	// The page cache must not keep the punched range.
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("file differs from expected after write+punch")
	}
	mem := make([]byte, size)
	d.ReadAt(mem, 0)
	if !bytes.Equal(mem, want) {
		t.Errorf("disk differs from expected after fsync")
	}

	// The size is fixed.
	if _, err := f.WriteAt([]byte("x"), size); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write at end: %v, want ENOSPC", err)
	}
	if err := f.Truncate(size / 2); !errors.Is(err, syscall.EPERM) {
		t.Errorf("truncate: %v, want EPERM", err)
	}
	if err := f.Truncate(size); err != nil {
		t.Errorf("truncate to same size: %v", err)
	}
	st := m.root.File("rw").Stats()
	if st.Fsyncs < 2 || st.Discards != 1 || st.WriteBytes < int64(len(data)) || st.OpenFiles < 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestParallelReadsAndWrites(t *testing.T) {
	const size = 16 << 20
	m := mount(t, map[string]disk.Disk{"rw": disk.NewMem(make([]byte, size), false)})
	p := filepath.Join(m.dir, "rw")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	// Each worker owns a 2 MiB region: write it, read it back, concurrently.
	for w := range 8 {
		wg.Go(func() {
			f, err := os.OpenFile(p, os.O_RDWR|syscall.O_DIRECT, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := alignedBuf(256 << 10)
			copy(buf, testlayer.Random(uint64(w)+10, len(buf)))
			back := alignedBuf(len(buf))
			for i := range 8 {
				off := int64(w)*2<<20 + int64(i)*int64(len(buf))
				if _, err := f.WriteAt(buf, off); err != nil {
					errs <- err
					return
				}
				if _, err := f.ReadAt(back, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, back) {
					errs <- fmt.Errorf("worker %d: readback differs at %d", w, off)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// faulty fails reads that touch [badOff, badOff+badLen), as a corrupted block would.
type faulty struct {
	*disk.Mem
	badOff, badLen int64
}

func (f *faulty) ReadAt(p []byte, off int64) (int, error) {
	if off < f.badOff+f.badLen && off+int64(len(p)) > f.badOff {
		return 0, fmt.Errorf("layer l2.lsmt: block at offset %d: checksum mismatch", f.badOff)
	}
	return f.Mem.ReadAt(p, off)
}

func TestCorruptRangeIsEIO(t *testing.T) {
	content := testlayer.Random(4, 4<<20)
	m := mount(t, map[string]disk.Disk{"bad": &faulty{Mem: disk.NewMem(content, true), badOff: 2 << 20, badLen: 4096}})
	f, err := os.OpenFile(filepath.Join(m.dir, "bad"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(64 << 10)
	if _, err := f.ReadAt(buf, 2<<20); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of bad range: %v, want EIO", err)
	}
	if n, err := f.ReadAt(buf, 1<<20); err != nil || !bytes.Equal(buf[:n], content[1<<20:1<<20+n]) {
		t.Errorf("read of good range: n=%d err=%v", n, err)
	}
	if l := m.log.String(); !strings.Contains(l, "l2.lsmt") || !strings.Contains(l, "stack=bad") || !strings.Contains(l, "off=2097152") {
		t.Errorf("log does not name stack, layer and offset: %q", l)
	}
}

func TestAddRemoveAtRuntime(t *testing.T) {
	m := mount(t, nil)
	p := filepath.Join(m.dir, "late")
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat before add: %v", err)
	}
	content := testlayer.Random(5, 1<<20)
	if _, err := m.root.Add("late", disk.NewMem(content, true)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.root.Add("late", disk.NewMem(content, true)); !errors.Is(err, fusefs.ErrExists) {
		t.Errorf("second add: %v, want ErrExists", err)
	}
	for _, bad := range []string{"", "a/b", "..", "."} {
		if _, err := m.root.Add(bad, disk.NewMem(nil, true)); !errors.Is(err, fusefs.ErrName) {
			t.Errorf("add %q: %v, want ErrName", bad, err)
		}
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read after add: %v", err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.root.Remove("late", false); !errors.Is(err, fusefs.ErrBusy) {
		t.Errorf("remove while open: %v, want ErrBusy", err)
	}
	if err := m.root.Remove("late", true); err != nil {
		t.Errorf("forced remove: %v", err)
	}
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 512<<10); !errors.Is(err, syscall.EIO) && err != nil {
		t.Errorf("read after forced remove: %v, want EIO or cached data", err)
	}
	f.Close()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat after remove: %v", err)
	}
	if err := m.root.Remove("late", false); !errors.Is(err, fusefs.ErrNotFound) {
		t.Errorf("remove twice: %v, want ErrNotFound", err)
	}
	// Remove then add under the same name serves the new content.
	content2 := testlayer.Random(6, 1<<20)
	if _, err := m.root.Add("late", disk.NewMem(content2, true)); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, content2) {
		t.Errorf("read after re-add: %v equal=%v", err, bytes.Equal(got, content2))
	}
}

// closeCounter records Flush and Close, to check shutdown order.
type closeCounter struct {
	*disk.Mem
	mu     sync.Mutex
	events []string
}

func (c *closeCounter) Flush() error {
	c.mu.Lock()
	c.events = append(c.events, "flush")
	c.mu.Unlock()
	return nil
}
func (c *closeCounter) Close() error {
	c.mu.Lock()
	c.events = append(c.events, "close")
	c.mu.Unlock()
	return nil
}

func TestNoLeaksAfterUnmount(t *testing.T) {
	needs.FUSE(t)
	// Warm up once so lazily started runtime goroutines and pools exist.
	for i := range 2 {
		before := leakcheck.Take()
		cc := &closeCounter{Mem: disk.NewMem(testlayer.Random(7, 2<<20), false)}
		m := mount(t, map[string]disk.Disk{"a": disk.NewMem(testlayer.Random(7, 2<<20), true), "b": cc})
		if _, err := os.ReadFile(filepath.Join(m.dir, "a")); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(m.dir, "b"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("hello"), 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		m.unmount(t)
		if got := strings.Join(cc.events, ","); !strings.HasSuffix(got, "flush,close") {
			t.Errorf("writable disk events %q, want flush then close last", got)
		}
		if i == 0 {
			continue
		}
		before.Check(t)
	}
}

func TestReadAtEOF(t *testing.T) {
	content := testlayer.Random(8, 10000)
	m := mount(t, map[string]disk.Disk{"small": disk.NewMem(content, true)})
	f, err := os.Open(filepath.Join(m.dir, "small"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 8192)
	n, err := f.ReadAt(buf, 8000)
	if n != 2000 || err != io.EOF || !bytes.Equal(buf[:n], content[8000:]) {
		t.Errorf("read across end: n=%d err=%v", n, err)
	}
}

// stalling blocks reads at stallOff until release is closed.
type stalling struct {
	*disk.Mem
	stallOff int64
	stalled  chan struct{} // closed when a read reached the stall
	release  chan struct{}
	once     sync.Once
}

func (s *stalling) ReadAt(p []byte, off int64) (int, error) {
	if off == s.stallOff {
		s.once.Do(func() { close(s.stalled) })
		<-s.release
	}
	return s.Mem.ReadAt(p, off)
}

// A read the disk holds up does not hold up other reads from the same CPU
// (over io_uring each CPU's queue has several rings; over /dev/fuse every
// request has its own goroutine).
func TestSlowReadDoesNotBlockOthers(t *testing.T) {
	content := testlayer.Random(5, 1<<20)
	d := &stalling{Mem: disk.NewMem(content, true), stallOff: 512 << 10, stalled: make(chan struct{}), release: make(chan struct{})}
	m := mount(t, map[string]disk.Disk{"d": d})
	f, err := os.OpenFile(filepath.Join(m.dir, "d"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Both readers on CPU 0: the kernel puts their requests on one queue.
	// The goroutine stays locked, so Go ends the thread with it and the
	// mask goes with the thread.
	onCPU0 := func() {
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Error(err)
		}
	}
	slow := make(chan error, 1)
	go func() {
		onCPU0()
		_, err := f.ReadAt(alignedBuf(4096), d.stallOff)
		slow <- err
	}()
	select {
	case <-d.stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("the slow read never reached the disk")
	}
	fast := make(chan error, 1)
	go func() {
		onCPU0()
		buf := alignedBuf(4096)
		n, err := f.ReadAt(buf, 0)
		if err == nil && !bytes.Equal(buf[:n], content[:4096]) {
			err = errors.New("wrong bytes")
		}
		fast <- err
	}()
	select {
	case err := <-fast:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(30 * time.Second):
		t.Error("a read waited for another one the disk held up")
	}
	close(d.release)
	if err := <-slow; err != nil {
		t.Error(err)
	}
}
