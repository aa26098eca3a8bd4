package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/obdfs/obdfs/blockcache"
	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/internal/regfile"
	"github.com/obdfs/obdfs/lsmt"
	"github.com/obdfs/obdfs/remote"
)

// Options configure how a stack is opened. The zero value works.
type Options struct {
	// Cache is the decoded-block cache shared by all stacks of a process;
	// nil decodes every read afresh.
	Cache *blockcache.Cache
	// NoOrderCheck skips the parent-uuid chain check (overlaybd itself
	// does not check it at runtime).
	NoOrderCheck bool
	// Remote configures registry access and the persistent blob cache for
	// docker:// and oci: specs and for config lowers named by digest.
	Remote remote.Options
	// Writable opens a config's upper layer for writing, under its
	// exclusive lock (one writer per layer, see lsmt.OpenRW). Otherwise the
	// upper is a read-only view that never writes (lsmt.OpenReadOnly).
	Writable bool
	// Context bounds remote fetches for the stack's whole life (default
	// context.Background()).
	Context context.Context
}

// Stack is an opened STACK: merged read-only layers and an optional
// writable upper. It is a disk.Disk and a disk.Layered.
type Stack struct {
	Spec   string
	merged *lsmt.Stack
	lowers []*Layer
	upper  *lsmt.RWFile
	upperN string
}

var (
	_ disk.Disk    = (*Stack)(nil)
	_ disk.Layered = (*Stack)(nil)
)

// Open opens a STACK spec (see the package doc).
func Open(spec string, o Options) (*Stack, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return nil, fmt.Errorf("%w: empty", ErrSpec)
	case isRemoteSpec(spec):
		return openRemote(spec, o)
	case strings.HasSuffix(spec, ".json"):
		data, err := regfile.ReadFile(spec, maxConfigSize)
		if err != nil {
			return nil, fmt.Errorf("image config: %w", err)
		}
		c, err := ParseConfig(data, spec)
		if err != nil {
			return nil, err
		}
		c.resolve(filepath.Dir(spec))
		s, err := OpenConfig(c, o)
		if err != nil {
			return nil, err
		}
		s.Spec = spec
		return s, nil
	default:
		if scheme, _, ok := strings.Cut(spec, "://"); ok && !strings.ContainsAny(scheme, "/,") {
			return nil, fmt.Errorf("%w: %q: unknown scheme %q", ErrSpec, spec, scheme)
		}
		c := &Config{}
		for _, p := range strings.Split(spec, ",") {
			if p = strings.TrimSpace(p); p == "" {
				return nil, fmt.Errorf("%w: %q: empty layer name", ErrSpec, spec)
			}
			c.Lowers = append(c.Lowers, LowerConfig{File: p})
		}
		if len(c.Lowers) > maxConfigLayers {
			return nil, fmt.Errorf("%w: %d layers, at most %d", ErrSpec, len(c.Lowers), maxConfigLayers)
		}
		s, err := OpenConfig(c, o)
		if err != nil {
			return nil, err
		}
		s.Spec = spec
		return s, nil
	}
}

// AbsSpec makes the local paths of a STACK spec absolute against the
// current directory, so the spec means the same to a daemon running
// elsewhere (stack add). docker:// specs are returned as they are.
func AbsSpec(spec string) (string, error) {
	spec = strings.TrimSpace(spec)
	if isRemoteSpec(spec) {
		if rest, ok := strings.CutPrefix(spec, "oci:"); ok {
			abs, err := filepath.Abs(rest) // DIR[:TAG]: the tag rides along
			return "oci:" + abs, err
		}
		return spec, nil
	}
	if scheme, _, ok := strings.Cut(spec, "://"); ok && !strings.ContainsAny(scheme, "/,") {
		return spec, nil // an unknown scheme: Open says so
	}
	parts := strings.Split(spec, ",")
	for i, p := range parts {
		if p = strings.TrimSpace(p); p == "" {
			return "", fmt.Errorf("%w: %q: empty layer name", ErrSpec, spec)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		parts[i] = abs
	}
	return strings.Join(parts, ","), nil
}

// OpenConfig opens the layers a parsed config names.
func OpenConfig(c *Config, o Options) (_ *Stack, err error) {
	s := &Stack{}
	defer func() {
		if err != nil {
			s.closeLayers()
		}
	}()
	s.lowers, err = openLayers(len(c.Lowers), func(i int) (*Layer, error) {
		l, err := openLower(c, c.Lowers[i], o)
		if err != nil {
			return nil, fmt.Errorf("lowers[%d]: %w", i, err)
		}
		return l, nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.finish(&c.Upper, o); err != nil {
		return nil, err
	}
	return s, nil
}

// finish checks the lowers' order, opens the upper (if any) and builds the
// merged view. On error it closes everything.
func (s *Stack) finish(upper *UpperConfig, o Options) (err error) {
	defer func() {
		if err != nil {
			if s.upper != nil {
				s.upper.Close()
			}
			s.closeLayers()
		}
	}()
	files := make([]*lsmt.File, len(s.lowers))
	for i, l := range s.lowers {
		files[i] = l.File
	}
	if !o.NoOrderCheck {
		if err := lsmt.VerifyOrder(files); err != nil {
			return err
		}
	}
	if upper != nil && upper.Data != "" {
		if o.Writable {
			s.upper, err = lsmt.OpenRW(upper.Data, upper.Index)
		} else {
			s.upper, err = lsmt.OpenReadOnly(upper.Data, upper.Index, lsmt.ReadOnlyOptions{})
		}
		if err != nil {
			return err
		}
		s.upperN = upper.Data
	}
	s.merged, err = lsmt.NewStack(files, s.upper)
	return err
}

func openLower(c *Config, lc LowerConfig, o Options) (*Layer, error) {
	if lc.File != "" {
		return OpenLayerFile(lc.File, o)
	}
	if lc.Dir != "" {
		// overlaybd's lookup order for a downloaded layer.
		for _, n := range []string{"overlaybd.commit", ".commit", "overlaybd.sealed"} {
			p := filepath.Join(lc.Dir, n)
			if _, err := os.Stat(p); err == nil {
				return OpenLayerFile(p, o)
			}
		}
	}
	if lc.Digest != "" {
		return openRemoteLower(c, lc, o)
	}
	return nil, fmt.Errorf("layer dir %s: no overlaybd.commit, .commit or overlaybd.sealed", lc.Dir)
}

// openParallel bounds how many layers are opened at once. Opening reads
// headers, trailers and indexes: from a registry each is a round trip, so
// opening layers side by side makes a cold mount take about as long as its
// slowest layer rather than the sum of all.
const openParallel = 16

// openLayers opens n layers with open, in parallel, and returns them in
// order. On error every layer already opened is closed.
func openLayers(n int, open func(i int) (*Layer, error)) ([]*Layer, error) {
	out := make([]*Layer, n)
	errs := make([]error, n)
	sem := make(chan struct{}, openParallel)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = open(i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, l := range out {
			if l != nil {
				l.Close()
			}
		}
		return nil, err
	}
	return out, nil
}

// Layers reports every layer, bottom first, the writable upper last.
func (s *Stack) Layers() []disk.LayerInfo {
	out := make([]disk.LayerInfo, 0, len(s.lowers)+1)
	for _, l := range s.lowers {
		out = append(out, l.Info())
	}
	if u := s.upper; u != nil {
		kind := "rw"
		if u.Sparse() {
			kind = "rw-sparse"
		}
		li := disk.LayerInfo{Name: s.upperN, Identity: "rw:" + s.upperN, Kind: kind, ReadOnly: u.ReadOnly()}
		li.BackingReads, li.BackingBytes = u.Reads()
		out = append(out, li)
	}
	return out
}

// Lowers returns the read-only layers, bottom first.
func (s *Stack) Lowers() []*Layer { return s.lowers }

// Upper returns the writable layer, or nil.
func (s *Stack) Upper() *lsmt.RWFile { return s.upper }

// Merged returns the merged LSMT view, e.g. to commit the whole stack
// into one layer (lsmt.Commit).
func (s *Stack) Merged() *lsmt.Stack { return s.merged }

// The disk.Disk methods forward to the merged view.

func (s *Stack) ReadAt(p []byte, off int64) (int, error)  { return s.merged.ReadAt(p, off) }
func (s *Stack) WriteAt(p []byte, off int64) (int, error) { return s.merged.WriteAt(p, off) }
func (s *Stack) Discard(off, length int64) error          { return s.merged.Discard(off, length) }
func (s *Stack) Flush() error                             { return s.merged.Flush() }
func (s *Stack) Size() int64                              { return s.merged.Size() }
func (s *Stack) ReadOnly() bool                           { return s.merged.ReadOnly() }

// Close flushes and closes the writable layer, then closes the layer files.
func (s *Stack) Close() error {
	var errs []error
	if s.upper != nil && !s.upper.ReadOnly() {
		// RWFile.Close does not sync: make everything written durable first.
		errs = append(errs, s.merged.Flush())
	}
	if s.merged != nil {
		errs = append(errs, s.merged.Close())
	} else if s.upper != nil {
		errs = append(errs, s.upper.Close())
	}
	errs = append(errs, s.closeLayers())
	return errors.Join(errs...)
}

func (s *Stack) closeLayers() error {
	var errs []error
	for _, l := range s.lowers {
		errs = append(errs, l.Close())
	}
	s.lowers = nil
	return errors.Join(errs...)
}
