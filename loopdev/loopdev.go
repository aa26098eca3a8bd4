package loopdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mode says how to open the backing file.
type Mode int

const (
	// Auto binds read-write when the backing file opens for writing and
	// read-only when it does not (EROFS, EACCES, EPERM).
	Auto Mode = iota
	ReadOnly
	ReadWrite
)

// Options for Attach. The zero value is Auto mode, buffered I/O, 512-byte
// sectors, no autoclear.
type Options struct {
	Mode Mode
	// DirectIO makes the loop driver read and write the backing file with
	// O_DIRECT semantics (no second page cache; asynchronous requests).
	DirectIO bool
	// BlockSize is the logical block size: 512 (default), 1024, 2048 or 4096.
	BlockSize int
	// Autoclear detaches the device on its last close (see the package doc).
	Autoclear bool
}

// Device is an attached loop device.
type Device struct {
	Path        string `json:"device"` // /dev/loopN
	Number      int    `json:"number"`
	BackingFile string `json:"backing_file"`
	ReadOnly    bool   `json:"read_only"`
	DirectIO    bool   `json:"direct_io"`
	Autoclear   bool   `json:"autoclear"`
	BlockSize   int    `json:"block_size"`
	Size        int64  `json:"size"`

	// id is the backing file as Attach opened it; Device.Detach checks
	// that the number still serves it.
	id fileID
}

// ErrNotLoop is returned for a path that is not a bound loop device.
var ErrNotLoop = errors.New("loopdev: not an attached loop device")

// Attach binds file to a free loop device and returns it (as read back from
// sysfs, so DirectIO says whether the kernel really uses direct I/O).
func Attach(file string, o Options) (*Device, error) {
	switch o.BlockSize {
	case 0, 512, 1024, 2048, 4096:
	default:
		return nil, fmt.Errorf("loopdev: %s: block size %d: want 512, 1024, 2048 or 4096", file, o.BlockSize)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	backing, ro, err := openBacking(abs, o.Mode)
	if err != nil {
		return nil, err
	}
	defer backing.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(backing.Fd()), &st); err != nil {
		return nil, fmt.Errorf("loopdev: stat %s: %w", abs, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFBLK {
		return nil, fmt.Errorf("loopdev: %s: not a regular file or block device", abs)
	}
	c := config{
		backing: int(backing.Fd()), id: statID(&st), name: abs, readOnly: ro,
		directIO: o.DirectIO, autoclear: o.Autoclear, blockSize: uint32(o.BlockSize),
	}
	// Another process may take the free device between GET_FREE and the
	// bind; the bind then fails with EBUSY and we ask again.
	for range 10 {
		n, err := getFree()
		if err != nil {
			return nil, fmt.Errorf("loopdev: attach %s: %w", abs, err)
		}
		dev, err := bind(n, c)
		if errors.Is(err, unix.EBUSY) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("loopdev: attach %s to /dev/loop%d: %w", abs, n, err)
		}
		return dev, nil
	}
	return nil, fmt.Errorf("loopdev: attach %s: every free loop device was taken by others", abs)
}

func openBacking(path string, m Mode) (f *os.File, ro bool, err error) {
	if m != ReadOnly {
		f, err = os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return f, false, nil
		}
		if m == ReadWrite || !(errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) {
			return nil, false, fmt.Errorf("loopdev: %w", err)
		}
	}
	f, err = os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, fmt.Errorf("loopdev: %w", err)
	}
	return f, true, nil
}

// forceLegacy makes bind skip LOOP_CONFIGURE, so tests run the pre-5.8
// sequence on a current kernel.
var forceLegacy bool

func bind(n int, c config) (*Device, error) {
	path := "/dev/loop" + strconv.Itoa(n)
	lf, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	err = errNoConfigure
	if !forceLegacy {
		err = configure(int(lf.Fd()), c)
	}
	if errors.Is(err, errNoConfigure) {
		err = configureLegacy(int(lf.Fd()), c)
	}
	if err != nil {
		return nil, err
	}
	d, err := info(n)
	if err != nil {
		// Bound but unreadable in sysfs: report what we asked for.
		d = &Device{Path: path, Number: n, BackingFile: c.name, ReadOnly: c.readOnly,
			DirectIO: c.directIO, Autoclear: c.autoclear, BlockSize: int(max(c.blockSize, 512))}
	}
	d.id = c.id
	return d, nil
}

// Detach unbinds dev (/dev/loopN or loopN), whatever it serves. When
// others still have the device open, the kernel defers the unbind to their
// last close and Detach reports deferred = true.
//
// A device number is reused as soon as it is free: detaching a name kept
// from earlier may unbind (or, when mounted, turn to autoclear) a device
// that another process attached since. Code that attached the device itself
// uses Device.Detach; a caller that knows the backing file uses
// DetachBacking.
func Detach(dev string) (deferred bool, err error) {
	n, err := number(dev)
	if err != nil {
		return false, err
	}
	return detach(n, nil)
}

// Detach unbinds d only while its number still serves the file Attach bound
// to it (same device and inode). A device detached already, or freed and
// attached again by someone else, is left alone and the error is
// ErrNotLoop. Detaching twice is therefore safe.
func (d *Device) Detach() (deferred bool, err error) {
	if d.id == (fileID{}) {
		return false, fmt.Errorf("loopdev: detach %s: not a device returned by Attach", d.Path)
	}
	return detach(d.Number, &d.id)
}

// DetachBacking unbinds dev only while it is bound to file (same device
// and inode); otherwise the error is ErrNotLoop and nothing changes.
func DetachBacking(dev, file string) (deferred bool, err error) {
	n, err := number(dev)
	if err != nil {
		return false, err
	}
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		return false, fmt.Errorf("loopdev: detach %s: backing file: %w", dev, &os.PathError{Op: "stat", Path: file, Err: err})
	}
	id := statID(&st)
	return detach(n, &id)
}

// detach clears /dev/loopN, when want is set only if it serves want. The
// check and the clear go through one open fd: while it is open nobody can
// unbind the device (a LOOP_CLR_FD by another only marks it autoclear), so
// the number cannot change hands between the two.
func detach(n int, want *fileID) (deferred bool, err error) {
	path := "/dev/loop" + strconv.Itoa(n)
	lf, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("loopdev: detach: %w", err)
	}
	defer lf.Close()
	fd := int(lf.Fd())
	if want != nil {
		got, err := backingID(fd)
		if errors.Is(err, unix.ENXIO) {
			return false, fmt.Errorf("%w: %s", ErrNotLoop, path)
		}
		if err != nil {
			return false, fmt.Errorf("loopdev: detach %s: %w", path, err)
		}
		if got != *want {
			return false, fmt.Errorf("%w: %s serves another file now (attached again since)", ErrNotLoop, path)
		}
	}
	err = clearFd(fd)
	if errors.Is(err, unix.ENXIO) {
		return false, fmt.Errorf("%w: %s", ErrNotLoop, path)
	}
	if err != nil {
		return false, fmt.Errorf("loopdev: detach %s: %w", path, err)
	}
	// With only our fd open the device is now running down (the unbind
	// completes at our close) and no longer reports a status; with other
	// openers it stays bound, marked autoclear, until their last close.
	_, err = backingID(fd)
	return err == nil, nil
}

// List returns the bound loop devices, by number.
func List() ([]Device, error) {
	ents, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var out []Device
	for _, e := range ents {
		n, err := number(filepath.Base(filepath.Dir(filepath.Dir(e))))
		if err != nil {
			continue
		}
		if d, err := info(n); err == nil {
			out = append(out, *d)
		}
	}
	slices.SortFunc(out, func(a, b Device) int { return a.Number - b.Number })
	return out, nil
}

// Info returns the state of a bound loop device.
func Info(dev string) (*Device, error) {
	n, err := number(dev)
	if err != nil {
		return nil, err
	}
	return info(n)
}

func number(dev string) (int, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(dev, "/dev/"), "loop")
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || s == "" {
		return 0, fmt.Errorf("%w: %q", ErrNotLoop, dev)
	}
	return n, nil
}

func info(n int) (*Device, error) {
	sys := fmt.Sprintf("/sys/block/loop%d", n)
	backing, err := readSys(sys, "loop/backing_file")
	if err != nil {
		return nil, fmt.Errorf("%w: /dev/loop%d", ErrNotLoop, n)
	}
	d := &Device{Path: "/dev/loop" + strconv.Itoa(n), Number: n, BackingFile: backing}
	d.ReadOnly = readSysBool(sys, "ro")
	d.DirectIO = readSysBool(sys, "loop/dio")
	d.Autoclear = readSysBool(sys, "loop/autoclear")
	if s, err := readSys(sys, "queue/logical_block_size"); err == nil {
		d.BlockSize, _ = strconv.Atoi(s)
	}
	if s, err := readSys(sys, "size"); err == nil {
		sectors, _ := strconv.ParseInt(s, 10, 64)
		d.Size = sectors * 512
	}
	return d, nil
}

func readSys(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b)), err
}

func readSysBool(dir, name string) bool {
	s, _ := readSys(dir, name)
	return s == "1"
}
