package server_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/fusefs"
	"github.com/obdfs/obdfs/internal/fusetest"
	"github.com/obdfs/obdfs/internal/leakcheck"
	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/server"
)

func TestMain(m *testing.M) { os.Exit(fusetest.Main(m)) }

// namedMem is a disk.Mem that reports a layer, as the real disks do.
type namedMem struct {
	*disk.Mem
	name string
}

func (l *namedMem) Layers() []disk.LayerInfo {
	return []disk.LayerInfo{{Name: l.name, Identity: "mem:" + l.name, Kind: "mem", ReadOnly: l.ReadOnly()}}
}

func pattern(spec string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = spec[i%len(spec)] ^ byte(i>>12)
	}
	return b
}

// memOpener accepts "mem:SIZE[:rw]"; content is a function of the spec.
func memOpener(spec string, _ server.LazyOptions) (disk.Disk, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || parts[0] != "mem" {
		return nil, fmt.Errorf("bad spec %q", spec)
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil {
		return nil, fmt.Errorf("bad spec %q: %w", spec, err)
	}
	rw := len(parts) > 2 && parts[2] == "rw"
	return &namedMem{Mem: disk.NewMem(pattern(spec, n), !rw), name: spec}, nil
}

func start(t *testing.T, stacks ...server.Stack) *server.Server {
	t.Helper()
	return startWith(t, memOpener, stacks...)
}

func startWith(t *testing.T, open server.Opener, stacks ...server.Stack) *server.Server {
	t.Helper()
	needs.FUSE(t)
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)
	s, err := server.Start(server.Config{
		Mountpoint: mp, Socket: filepath.Join(dir, "ctl.sock"), Open: open,
		Mount: fusefs.MountOptions{URing: fusetest.URing()},
		Log:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, stacks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Shutdown(); err != nil {
			t.Logf("shutdown: %v; detaching lazily", err)
			unix.Unmount(mp, unix.MNT_DETACH)
			s.Wait()
		}
	})
	return s
}

// A stack that takes long to open (a stalled registry, a path that used to
// name a FIFO) does not hold the control path: ls, rm of another stack and
// add of the same name answer meanwhile, and a stack whose open finishes
// after shutdown began is closed, not served.
func TestSlowOpenDoesNotHoldControl(t *testing.T) {
	release, opening := make(chan struct{}), make(chan struct{})
	var closed sync.WaitGroup
	open := func(spec string, lazy server.LazyOptions) (disk.Disk, error) {
		if spec == "slow" {
			close(opening)
			<-release
			closed.Add(1)
			return &closeCounter{Disk: disk.NewMem(make([]byte, 4096), true), wg: &closed}, nil
		}
		return memOpener(spec, lazy)
	}
	s := startWith(t, open, server.Stack{Name: "a", Spec: "mem:4096"}, server.Stack{Name: "b", Spec: "mem:4096"})
	call := func(req server.Request) error { _, err := server.Call(s.Socket(), req); return err }
	added := make(chan error, 1)
	go func() { added <- call(server.Request{Op: "add", Name: "slow", Spec: "slow"}) }()
	<-opening
	done := make(chan error, 1)
	go func() {
		done <- errors.Join(call(server.Request{Op: "ls"}), call(server.Request{Op: "rm", Name: "b"}))
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("ls and rm waited for a stack being opened")
	}
	if err := call(server.Request{Op: "add", Name: "slow", Spec: "mem:1"}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second add of a name being opened: %v", err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("shutdown waited for a stack being opened")
	}
	close(release)
	if err := <-added; err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("add finishing after shutdown: %v", err)
	}
	closed.Wait() // the late stack was closed
}

// closeCounter marks its Close in wg.
type closeCounter struct {
	disk.Disk
	wg *sync.WaitGroup
}

func (c *closeCounter) Close() error { c.wg.Done(); return c.Disk.Close() }

func TestControlSocket(t *testing.T) {
	s := start(t, server.Stack{Name: "a", Spec: "mem:1048576"})
	call := func(req server.Request) (*server.Response, error) { return server.Call(s.Socket(), req) }

	if _, err := call(server.Request{Op: "add", Name: "b", Spec: "mem:2097152:rw"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.Mountpoint(), "b"))
	if err != nil || !bytes.Equal(got, pattern("mem:2097152:rw", 2<<20)) {
		t.Fatalf("read added stack: %v", err)
	}
	for _, tc := range []struct {
		req  server.Request
		want string
	}{
		{server.Request{Op: "add", Name: "a", Spec: "mem:1"}, "exists"},
		{server.Request{Op: "add", Name: "c", Spec: "nonsense"}, `stack c=nonsense: bad spec "nonsense"`},
		{server.Request{Op: "add", Name: "x/y", Spec: "mem:1"}, "bad stack name"},
		{server.Request{Op: "rm", Name: "zz"}, "no such stack"},
		{server.Request{Op: "frobnicate"}, "unknown op"},
	} {
		if _, err := call(tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want error containing %q", tc.req, err, tc.want)
		}
	}

	f, err := os.Open(filepath.Join(s.Mountpoint(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	f.ReadAt(buf, 0)
	resp, err := call(server.Request{Op: "ls"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Stacks) != 2 || resp.Stacks[0].Name != "a" || !resp.Stacks[0].ReadOnly ||
		resp.Stacks[0].Stats.OpenFiles != 1 || resp.Stacks[1].ReadOnly || resp.Stacks[1].Size != 2<<20 ||
		len(resp.Stacks[0].Layers) != 1 || resp.Stacks[0].Spec != "mem:1048576" || resp.Pid != os.Getpid() {
		t.Errorf("ls: %+v", resp)
	}
	if resp.Stacks[0].Stats.ReadBytes == 0 || resp.Stacks[1].Stats.ReadBytes != 2<<20 {
		t.Errorf("read counters: a %+v b %+v", resp.Stacks[0].Stats, resp.Stacks[1].Stats)
	}
	if _, err := call(server.Request{Op: "rm", Name: "a"}); err == nil || !strings.Contains(err.Error(), "open") {
		t.Errorf("rm while open: %v", err)
	}
	// Shutdown refuses while a file is open, and the server keeps serving.
	if _, err := call(server.Request{Op: "shutdown"}); err == nil {
		t.Errorf("shutdown with an open file succeeded")
	}
	if _, err := f.ReadAt(buf, 8192); err != nil {
		t.Errorf("read after refused shutdown: %v", err)
	}
	f.Close()
	// Release reaches the daemon asynchronously after close.
	var rmErr error
	for range 50 {
		if _, rmErr = call(server.Request{Op: "rm", Name: "a"}); rmErr == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rmErr != nil {
		t.Errorf("rm after close: %v", rmErr)
	}
	if _, err := os.Stat(filepath.Join(s.Mountpoint(), "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat removed stack: %v", err)
	}
	if _, err := call(server.Request{Op: "shutdown"}); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
	if _, err := os.Stat(s.Socket()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestExternalUnmount(t *testing.T) {
	s := start(t, server.Stack{Name: "a", Spec: "mem:65536:rw"})
	if err := unix.Unmount(s.Mountpoint(), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server did not notice the unmount")
	}
	if _, err := server.Call(s.Socket(), server.Request{Op: "ping"}); !errors.Is(err, server.ErrNoDaemon) {
		t.Errorf("ping after unmount: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	needs.FUSE(t)
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)
	cfg := server.Config{Mountpoint: mp, Socket: filepath.Join(dir, "ctl.sock"), Open: memOpener,
		Mount: fusefs.MountOptions{URing: fusetest.URing()}}
	if _, err := server.Start(cfg, []server.Stack{{Name: "a", Spec: "mem:1"}, {Name: "b", Spec: "bogus"}}); err == nil || !strings.Contains(err.Error(), "b=bogus") {
		t.Errorf("bad spec: %v", err)
	}
	cfg.Mountpoint = filepath.Join(dir, "missing")
	if _, err := server.Start(cfg, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing mountpoint: %v", err)
	}
	// A second daemon on a served mountpoint's socket is refused.
	s := start(t)
	cfg.Mountpoint, cfg.Socket = mp, s.Socket()
	if _, err := server.Start(cfg, nil); err == nil || !strings.Contains(err.Error(), "another obdfs daemon") {
		t.Errorf("second daemon: %v", err)
	}
}

func TestNoLeaks(t *testing.T) {
	needs.FUSE(t)
	for i := range 2 { // the first round warms up lazily started runtime parts
		before := leakcheck.Take()
		s := start(t, server.Stack{Name: "a", Spec: "mem:1048576"})
		os.ReadFile(filepath.Join(s.Mountpoint(), "a"))
		server.Call(s.Socket(), server.Request{Op: "ls"})
		if err := s.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			continue
		}
		before.Check(t)
	}
}

func TestSocketPath(t *testing.T) {
	t.Setenv("OBDFS_RUN_DIR", "/run/obdfs")
	for _, tc := range []struct{ mp, want string }{
		{"/mnt/images", "/run/obdfs/mnt-images.sock"},
		{"/mnt/my-disk", `/run/obdfs/mnt-my\x2ddisk.sock`},
		{"/", "/run/obdfs/-.sock"},
		{"/" + strings.Repeat("long/", 30), ""},
	} {
		got := server.SocketPath(tc.mp)
		if tc.want != "" && got != tc.want {
			t.Errorf("SocketPath(%q) = %q, want %q", tc.mp, got, tc.want)
		}
		if len(got) > 100 {
			t.Errorf("SocketPath(%q) = %q: too long for a socket address", tc.mp, got)
		}
	}
}

// The lazy-read settings of `stack add` reach the opener through the
// control socket as given: a field set to its zero value (readahead 0,
// background off) stays set, one left out stays nil, and a stack added
// without any gets none.
func TestAddLazyOptions(t *testing.T) {
	var mu sync.Mutex
	got := map[string]server.LazyOptions{}
	open := func(spec string, lazy server.LazyOptions) (disk.Disk, error) {
		mu.Lock()
		got[spec] = lazy
		mu.Unlock()
		return memOpener(spec, lazy)
	}
	s := startWith(t, open, server.Stack{Name: "a", Spec: "mem:4096"})
	zero, off, delay, rate, trace := int64(0), false, 3*time.Second, int64(1<<20), "/tmp/x.trace"
	for _, tc := range []struct {
		name, spec string
		lazy       server.LazyOptions
	}{
		{"b", "mem:8192", server.LazyOptions{Readahead: &zero, Background: &off}},
		{"c", "mem:12288", server.LazyOptions{BackgroundDelay: &delay, BackgroundRate: &rate, RecordTrace: &trace}},
		{"d", "mem:16384", server.LazyOptions{}},
	} {
		if _, err := server.Call(s.Socket(), server.Request{Op: "add", Name: tc.name, Spec: tc.spec, Lazy: tc.lazy}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		g := got[tc.spec]
		mu.Unlock()
		if lazyString(g) != lazyString(tc.lazy) {
			t.Errorf("%s: opener got %s, want %s", tc.name, lazyString(g), lazyString(tc.lazy))
		}
	}
	if g := got["mem:4096"]; g != (server.LazyOptions{}) {
		t.Errorf("stack given to Start got lazy options %s", lazyString(g))
	}
}

// lazyString shows which fields are set and to what.
func lazyString(l server.LazyOptions) string {
	f := func(p any) string {
		switch v := p.(type) {
		case *int64:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *bool:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *time.Duration:
			if v != nil {
				return v.String()
			}
		case *string:
			if v != nil {
				return strconv.Quote(*v)
			}
		}
		return "nil"
	}
	return fmt.Sprintf("readahead=%s background=%s delay=%s rate=%s record=%s trace=%s",
		f(l.Readahead), f(l.Background), f(l.BackgroundDelay), f(l.BackgroundRate), f(l.RecordTrace), f(l.Trace))
}
