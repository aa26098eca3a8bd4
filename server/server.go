package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/fusefs"
	"github.com/obdfs/obdfs/internal/unixsock"
)

// Opener opens a STACK spec, its registry layers read as lazy says. The
// server owns the returned disk.
type Opener func(spec string, lazy LazyOptions) (disk.Disk, error)

// Config configures a daemon.
type Config struct {
	Mountpoint string // cleaned with CleanMountpoint by Start
	Socket     string // "" means SocketPath(Mountpoint)
	Open       Opener
	Cache      *blockcache.Cache // reported by stats; may be nil
	Mount      fusefs.MountOptions
	// NonEmpty mounts over a directory that has entries (hiding them);
	// otherwise such a mountpoint is refused.
	NonEmpty bool
	// Perm is the owner and mode of served files unless a stack overrides
	// it; the zero value means fusefs.DefaultPerm.
	Perm fusefs.Perm
	Log  *slog.Logger // nil means slog.Default()
	// Observer, if set, wraps each stack's disk as it is added and is told
	// when it is removed (the metrics package's *Metrics).
	Observer Observer
}

// Observer instruments the stacks of a server.
type Observer interface {
	Wrap(name string, d disk.Disk) disk.Disk
	Forget(name string)
}

// Stack names a spec to serve as MOUNTPOINT/Name.
type Stack struct {
	Name, Spec string
	Perm       PermOverride // what differs from Config.Perm
	Lazy       LazyOptions  // what differs from the daemon's lazy-read settings
}

// LazyOptions change how one stack's registry layers are read lazily; nil
// fields keep the settings the daemon was started with. The Opener applies
// them.
type LazyOptions struct {
	Readahead       *int64         `json:"readahead,omitempty"` // largest window in bytes; 0 turns it off
	Background      *bool          `json:"background,omitempty"`
	BackgroundDelay *time.Duration `json:"background_delay,omitempty"`
	BackgroundRate  *int64         `json:"background_rate,omitempty"` // bytes per second; 0: no bound
	RecordTrace     *string        `json:"record_trace,omitempty"`    // trace file to record into; "": none
	Trace           *string        `json:"trace,omitempty"`           // trace file to replay; "": none
}

// PermOverride changes some of a stack's owner and mode; nil fields keep
// the daemon's default (Config.Perm).
type PermOverride struct {
	Uid  *uint32 `json:"uid,omitempty"`
	Gid  *uint32 `json:"gid,omitempty"`
	Mode *uint32 `json:"mode,omitempty"`
}

// Server is a running daemon.
type Server struct {
	cfg  Config
	log  *slog.Logger
	root *fusefs.Root
	fuse *fusefs.Server
	ln   net.Listener

	mu      sync.Mutex // guards specs, pending, stop; never held across a stack open
	specs   map[string]string
	pending map[string]bool // names being opened by add
	stop    bool

	wg       sync.WaitGroup // control connections and the accept loop
	closed   chan struct{}  // stacks closed (closeErr set)
	done     chan struct{}  // closed, and the control socket is gone
	closeErr error
}

// Start opens the stacks, claims the control socket and mounts. It returns
// once the mount is ready; on error nothing is left behind.
func Start(cfg Config, stacks []Stack) (_ *Server, err error) {
	if cfg.Open == nil {
		return nil, errors.New("server: no opener")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	mp, err := CleanMountpoint(cfg.Mountpoint)
	if err != nil {
		return nil, err
	}
	cfg.Mountpoint = mp
	if cfg.Socket == "" {
		cfg.Socket = SocketPath(mp)
	}
	if err := checkMountpoint(mp); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log, root: fusefs.NewRoot(cfg.Log), specs: map[string]string{}, pending: map[string]bool{},
		closed: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.root.Close()
			if s.ln != nil {
				s.ln.Close()
			}
		}
	}()
	for _, st := range stacks {
		if err := s.add(st); err != nil {
			return nil, err
		}
	}
	if s.ln, err = listen(cfg.Socket); err != nil {
		return nil, err
	}
	// After the socket: a mountpoint already served is reported as such.
	if !cfg.NonEmpty {
		if err := checkEmpty(mp); err != nil {
			return nil, err
		}
	}
	if s.fuse, err = fusefs.Mount(mp, s.root, cfg.Mount); err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go s.accept()
	go s.waitUnmount()
	s.log.Info("serving", "mountpoint", mp, "socket", cfg.Socket, "stacks", len(stacks))
	return s, nil
}

// checkMountpoint fails early, with advice, on a dead FUSE mount (a killed
// daemon) and on a missing or non-directory path.
func checkMountpoint(mp string) error {
	// stat may be answered from cached attributes; statfs always asks the
	// filesystem, so it sees a dead FUSE connection.
	var sfs syscall.Statfs_t
	err := syscall.Statfs(mp, &sfs)
	if err == nil {
		var fi os.FileInfo
		fi, err = os.Stat(mp)
		if err == nil && !fi.IsDir() {
			return fmt.Errorf("mountpoint %s: not a directory", mp)
		}
	}
	if errors.Is(err, syscall.ENOTCONN) {
		return fmt.Errorf("mountpoint %s is a dead FUSE mount (its daemon died): run `obdfs umount %s` or `umount -l %s` first", mp, mp, mp)
	}
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mp, err)
	}
	return nil
}

// checkEmpty refuses a mountpoint with entries the mount would hide.
func checkEmpty(mp string) error {
	d, err := os.Open(mp)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mp, err)
	}
	names, _ := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty (%s, ...): the mount would hide its files; use --nonempty to mount over them anyway", mp, names[0])
	}
	return nil
}

// listen claims the socket; a socket file nobody answers on is stale (a
// killed daemon) and replaced.
func listen(path string) (net.Listener, error) {
	if err := PrepareRunDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := unixsock.Listen(path)
	if errors.Is(err, unixsock.ErrInUse) {
		return nil, fmt.Errorf("control socket %s: another obdfs daemon serves this mountpoint", path)
	}
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// Mountpoint is the cleaned mountpoint.
func (s *Server) Mountpoint() string { return s.cfg.Mountpoint }

// Socket is the control socket path.
func (s *Server) Socket() string { return s.cfg.Socket }

// Root is the mount's root node (for tests and stats).
func (s *Server) Root() *fusefs.Root { return s.root }

// Done is closed once the server has stopped and every stack is closed.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until the server has stopped and returns the error of
// closing the stacks.
func (s *Server) Wait() error {
	<-s.done
	return s.closeErr
}

// add opens spec and serves it as name. The control lock is not held while
// the stack opens (a slow registry or a bad path must not stall stack ls,
// rm, umount or SIGTERM): the name is reserved in pending meanwhile.
func (s *Server) add(st Stack) error {
	name, spec := st.Name, st.Spec
	if err := fusefs.CheckName(name); err != nil {
		return err
	}
	perm, err := s.perm(st.Perm)
	if err != nil {
		return fmt.Errorf("stack %s: %w", name, err)
	}
	s.mu.Lock()
	switch {
	case s.stop:
		s.mu.Unlock()
		return errors.New("server is stopping")
	case s.root.File(name) != nil || s.pending[name]:
		s.mu.Unlock()
		return fmt.Errorf("stack %q: %w", name, fusefs.ErrExists)
	}
	s.pending[name] = true
	s.mu.Unlock()

	d, err := s.cfg.Open(spec, st.Lazy)

	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, name)
	if err != nil {
		return fmt.Errorf("stack %s=%s: %w", name, spec, err)
	}
	if s.stop {
		d.Close()
		return errors.New("server is stopping")
	}
	if s.cfg.Observer != nil {
		d = s.cfg.Observer.Wrap(name, d)
	}
	if _, err := s.root.AddPerm(name, d, perm); err != nil {
		d.Close()
		if s.cfg.Observer != nil {
			s.cfg.Observer.Forget(name)
		}
		return err
	}
	s.specs[name] = spec
	return nil
}

// perm applies a stack's override to the daemon's default.
func (s *Server) perm(ov PermOverride) (fusefs.Perm, error) {
	p := s.cfg.Perm
	if p == (fusefs.Perm{}) {
		p = fusefs.DefaultPerm()
	}
	if ov.Uid != nil {
		p.Uid = *ov.Uid
	}
	if ov.Gid != nil {
		p.Gid = *ov.Gid
	}
	if ov.Mode != nil {
		if *ov.Mode&^0o7777 != 0 {
			return p, fmt.Errorf("mode %#o: not permission bits", *ov.Mode)
		}
		p.Mode = *ov.Mode
	}
	if (ov.Uid != nil || ov.Gid != nil) && !s.cfg.Mount.AllowOther {
		return p, errors.New("the mount is private to its owner (mounted without --allow-other): no other user or group could open this stack")
	}
	return p, nil
}

// Add opens spec and serves it as NAME with the daemon's default owner and
// mode.
func (s *Server) Add(name, spec string) error {
	return s.AddStack(Stack{Name: name, Spec: spec})
}

// AddStack opens st.Spec and serves it as st.Name, with st's owner, mode
// and lazy-read settings.
func (s *Server) AddStack(st Stack) error {
	if err := s.add(st); err != nil {
		return err
	}
	s.log.Info("stack added", "name", st.Name, "spec", st.Spec)
	return nil
}

// Remove stops serving NAME and closes its stack; see fusefs.Root.Remove.
func (s *Server) Remove(name string, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.root.Remove(name, force); err != nil {
		return err
	}
	delete(s.specs, name)
	if s.cfg.Observer != nil {
		s.cfg.Observer.Forget(name)
	}
	s.log.Info("stack removed", "name", name, "force", force)
	return nil
}

// List describes the served stacks, by name.
func (s *Server) List() []StackInfo {
	s.mu.Lock()
	specs := make(map[string]string, len(s.specs))
	for k, v := range s.specs {
		specs[k] = v
	}
	s.mu.Unlock()
	var out []StackInfo
	for _, f := range s.root.Files() {
		d := f.Disk()
		si := StackInfo{Name: f.Name(), Spec: specs[f.Name()], Size: d.Size(), ReadOnly: d.ReadOnly(), Stats: f.Stats()}
		if l, ok := d.(disk.Layered); ok {
			si.Layers = l.Layers()
		}
		out = append(out, si)
	}
	return out
}

// CacheInfo reports the shared cache, or nil without one.
func (s *Server) CacheInfo() *CacheInfo {
	if s.cfg.Cache == nil {
		return nil
	}
	return &CacheInfo{Bytes: s.cfg.Cache.Bytes(), MaxBytes: s.cfg.Cache.MaxBytes()}
}

// Shutdown flushes the writable stacks, unmounts, then closes every stack.
// If the mount is busy (a loop device or process has a file open), it
// fails and the server keeps serving.
func (s *Server) Shutdown() error {
	s.mu.Lock()
	if err := s.root.Flush(); err != nil {
		s.log.Error("flush before unmount", "err", err)
	}
	err := s.fuse.Unmount()
	if err != nil {
		s.mu.Unlock()
		select {
		case <-s.closed: // already unmounted from outside
			return s.closeErr
		default:
		}
		return fmt.Errorf("unmount %s: %w (is a file still open or a loop device attached?)", s.cfg.Mountpoint, err)
	}
	s.stop = true
	s.mu.Unlock()
	<-s.closed
	return s.closeErr
}

// waitUnmount runs when the FUSE session ends, however it ends.
func (s *Server) waitUnmount() {
	s.fuse.Wait()
	s.mu.Lock()
	s.stop = true
	s.mu.Unlock()
	s.closeErr = s.root.Close()
	if s.closeErr != nil {
		s.log.Error("closing stacks", "err", s.closeErr)
	}
	close(s.closed)
	s.ln.Close()
	s.wg.Wait()
	s.log.Info("stopped", "mountpoint", s.cfg.Mountpoint)
	close(s.done)
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req Request
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	resp := Response{Pid: os.Getpid()}
	var err error
	switch req.Op {
	case "ping":
	case "add":
		err = s.AddStack(Stack{Name: req.Name, Spec: req.Spec, Perm: req.Perm, Lazy: req.Lazy})
	case "rm":
		err = s.Remove(req.Name, req.Force)
	case "ls", "stats":
		resp.Stacks = s.List()
		resp.Cache = s.CacheInfo()
	case "shutdown":
		// Shutdown returns once the stacks are closed, before the server
		// waits for this handler: the reply says they are.
		err = s.Shutdown()
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	if err != nil {
		resp.Error = err.Error()
	}
	json.NewEncoder(c).Encode(resp)
}
