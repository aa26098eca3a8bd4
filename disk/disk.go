// Package disk defines the virtual block device that every obdfs front end
// (the FUSE file server, the ublk server, `obdfs cat`) serves, and that every
// back end (an LSMT stack, a flat file, a test image) implements.
//
// Keeping the interface here, apart from both sides, lets fusefs and ublk be
// built and tested without the formats, and lets the formats know nothing of
// the kernel interfaces.
package disk

import (
	"errors"
	"io"
	"sync"
)

// ErrReadOnly is returned by WriteAt and Discard on a read-only disk.
var ErrReadOnly = errors.New("disk is read-only")

// Disk is a virtual raw disk of a fixed size.
//
// ReadAt and WriteAt follow the io.ReaderAt / io.WriterAt contracts and may be
// called concurrently. Reads past Size return io.EOF (a short read). Offsets
// and lengths need not be aligned; implementations that store sectors handle
// the read-modify-write themselves.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	io.Closer

	// Size is the virtual size in bytes.
	Size() int64
	// ReadOnly reports whether WriteAt and Discard fail with ErrReadOnly.
	ReadOnly() bool
	// Flush makes every write and discard acknowledged so far durable.
	Flush() error
	// Discard makes [off, off+length) read as zeros and frees its storage
	// where the format allows.
	Discard(off, length int64) error
}

// Mem is a Disk held in memory, for tests of the front ends. Like every
// Disk it may be read and written concurrently (front ends serve several
// requests at once).
type Mem struct {
	mu       sync.RWMutex
	buf      []byte
	readOnly bool
}

// NewMem returns a writable in-memory disk holding a copy of b.
func NewMem(b []byte, readOnly bool) *Mem {
	return &Mem{buf: append([]byte(nil), b...), readOnly: readOnly}
}

func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("disk: negative offset")
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off >= int64(len(m.buf)) {
		return 0, io.EOF
	}
	n := copy(p, m.buf[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > int64(len(m.buf)) {
		return 0, errors.New("disk: write past end")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.buf[off:], p), nil
}

func (m *Mem) Discard(off, length int64) error {
	if m.readOnly {
		return ErrReadOnly
	}
	if off < 0 || off+length > int64(len(m.buf)) {
		return errors.New("disk: discard past end")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.buf[off : off+length])
	return nil
}

func (m *Mem) Size() int64    { return int64(len(m.buf)) }
func (m *Mem) ReadOnly() bool { return m.readOnly }
func (m *Mem) Flush() error   { return nil }
func (m *Mem) Close() error   { return nil }

var _ Disk = (*Mem)(nil)

// ReadOnlyView returns d with WriteAt and Discard refused (ErrReadOnly);
// reads, Flush and Close go to d. It serves a stack that has a writable
// upper read-only, e.g. to a block device opened by a guest that must not
// change it.
func ReadOnlyView(d Disk) Disk {
	if d.ReadOnly() {
		return d
	}
	return readOnly{d}
}

type readOnly struct{ Disk }

func (readOnly) ReadOnly() bool                           { return true }
func (readOnly) WriteAt(p []byte, off int64) (int, error) { return 0, ErrReadOnly }
func (readOnly) Discard(off, n int64) error               { return ErrReadOnly }
