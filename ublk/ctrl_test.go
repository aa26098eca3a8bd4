package ublk

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/internal/uring"
	"github.com/obdfs/obdfs/ublk/internal/uapi"
)

// Host-side tests of the control-path decisions against fake kernels that
// answer as docs/ublk-protocol.md §1.3, §1.6 and §3.3 say (and the 6.6/6.13+/7.0 driver
// sources) say each version does. The real kernels (6.1, 6.12) are covered
// by the VM tests; these cover the versions we cannot boot here.

// fakeKernel answers control commands like one ublk driver version.
type fakeKernel struct {
	name      string
	ioctl     bool   // ioctl-encoded codes (6.4+)
	legacy    bool   // legacy codes (always before 6.4; 6.4+ with LEGACY_OPCODES=y)
	features  uint64 // GET_FEATURES answer; 0: no GET_FEATURES (< 6.5)
	supported uint64 // flags ADD_DEV keeps
	added     uint64 // flags ADD_DEV always ORs in
	recCheck  bool   // 6.13+: refuses REISSUE without USER_RECOVERY, REISSUE|FAIL_IO

	devs map[uint32]*fakeDev
	log  []string // "legacy ADD_DEV", "ioctl GET_DEV_INFO", ...
}

type fakeDev struct {
	info uapi.DevInfo
	// deadLive: GET_DEV_INFO answers still LIVE after the server died (the
	// 6.1–6.6 monitor runs every 5 s); then the state turns dead.
	deadLive int
	// hungCmd: a STOP_DEV or DEL_DEV sent while LIVE with a dead server,
	// which hangs on 6.1.
	hungCmd string
}

const (
	f61   = uapi.FURingCmdCompInTask | uapi.FNeedGetData | uapi.FUserRecovery | uapi.FUserRecoveryReissue
	f64   = f61 | uapi.FUnprivilegedDev | uapi.FCmdIoctlEncode
	f65   = f64 | uapi.FUserCopy
	f66   = f65 | uapi.FZoned
	f613  = f66 | uapi.FUserRecoveryFailIO
	f70   = f613 | 1<<10 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15 | 1<<16 | 1<<17 | 1<<18
	added = uapi.FCmdIoctlEncode | uapi.FURingCmdCompInTask
)

func kernels() []*fakeKernel {
	return []*fakeKernel{
		{name: "6.1", legacy: true, supported: f61, added: uapi.FURingCmdCompInTask},
		{name: "6.4", ioctl: true, legacy: true, supported: f64, added: added},
		{name: "6.6", ioctl: true, legacy: true, features: f66, supported: f66, added: added},
		{name: "6.8", ioctl: true, legacy: true, features: f66, supported: f66, added: added},
		{name: "6.12", ioctl: true, legacy: true, features: f66, supported: f66, added: added},
		{name: "6.12-no-legacy", ioctl: true, features: f66, supported: f66, added: added},
		{name: "6.13", ioctl: true, legacy: true, features: f613, supported: f613, added: added, recCheck: true},
		{name: "7.0", ioctl: true, legacy: true, features: f70, supported: f70 | uapi.FSupportZeroCopy,
			added: added | 1<<13 | 1<<14, recCheck: true},
	}
}

var nrNames = map[uint32]string{
	uapi.CmdGetDevInfo: "GET_DEV_INFO", uapi.CmdAddDev: "ADD_DEV", uapi.CmdDelDev: "DEL_DEV",
	uapi.CmdStartDev: "START_DEV", uapi.CmdStopDev: "STOP_DEV", uapi.CmdSetParams: "SET_PARAMS",
	uapi.CmdGetParams: "GET_PARAMS", uapi.CmdGetFeatures: "GET_FEATURES",
}

func newFakeControl(k *fakeKernel) *control {
	if k.devs == nil {
		k.devs = map[uint32]*fakeDev{}
	}
	c := &control{buf: make([]byte, 4096)}
	c.send = func(op, id uint32, n int, data uint64) (int32, error) { return k.cmd(c.buf[:n], op, id), nil }
	return c
}

func errno(e unix.Errno) int32 { return -int32(e) }

func (k *fakeKernel) cmd(buf []byte, op, id uint32) int32 {
	typ, nr := (op>>8)&0xff, op&0xff
	enc := "legacy"
	if typ == 'u' {
		enc = "ioctl"
	}
	k.log = append(k.log, enc+" "+nrNames[nr])
	if !k.ioctl {
		// 6.1: anything but the exact legacy ADD_DEV looks up device id
		// first; an unknown code on a real device is -EOPNOTSUPP.
		if op == uapi.CmdAddDev {
			return k.addDev(buf, id)
		}
		d := k.devs[id]
		if d == nil {
			return errno(unix.ENODEV)
		}
		if typ != 0 {
			return errno(unix.EOPNOTSUPP)
		}
		return k.devCmd(d, nr, id, buf)
	}
	if typ != 'u' && (typ != 0 || !k.legacy) {
		return errno(unix.EOPNOTSUPP)
	}
	if op == uapi.CtrlIoctl(uapi.CmdGetFeatures) && k.features != 0 {
		if len(buf) != 8 {
			return errno(unix.EINVAL)
		}
		for i := range 8 {
			buf[i] = byte(k.features >> (8 * i))
		}
		return 0
	}
	if nr == uapi.CmdAddDev {
		return k.addDev(buf, id)
	}
	d := k.devs[id]
	if d == nil {
		return errno(unix.ENODEV)
	}
	return k.devCmd(d, nr, id, buf)
}

func (k *fakeKernel) addDev(buf []byte, id uint32) int32 {
	var info uapi.DevInfo
	copy(uapi.Bytes(&info), buf)
	if info.DevID != id || info.QueueDepth == 0 || info.NrHwQueues == 0 {
		return errno(unix.EINVAL)
	}
	if k.recCheck {
		switch info.Flags & (uapi.FUserRecovery | uapi.FUserRecoveryReissue | uapi.FUserRecoveryFailIO) {
		case 0, uapi.FUserRecovery, uapi.FUserRecovery | uapi.FUserRecoveryReissue,
			uapi.FUserRecovery | uapi.FUserRecoveryFailIO:
		default:
			return errno(unix.EINVAL)
		}
	}
	if id == anyID {
		for id = 0; k.devs[id] != nil; id++ {
		}
	} else if k.devs[id] != nil {
		return errno(unix.EEXIST)
	}
	info.DevID = id
	info.Flags = info.Flags&k.supported | k.added
	info.Flags &^= uapi.FSupportZeroCopy
	if info.Flags&uapi.FUserCopy != 0 {
		info.Flags &^= uapi.FNeedGetData
	}
	info.NrHwQueues = min(info.NrHwQueues, 2)
	info.MaxIOBufBytes &^= 4095
	info.SrvPID = -1
	k.devs[id] = &fakeDev{info: info}
	copy(buf, uapi.Bytes(&info))
	return 0
}

func (k *fakeKernel) devCmd(d *fakeDev, nr, id uint32, buf []byte) int32 {
	switch nr {
	case uapi.CmdGetDevInfo:
		if d.info.State == uapi.StateLive && d.info.SrvPID == deadPID {
			if d.deadLive == 0 {
				d.info.State, d.info.SrvPID = uapi.StateDead, -1
			} else {
				d.deadLive--
			}
		}
		copy(buf, uapi.Bytes(&d.info))
		return 0
	case uapi.CmdStopDev, uapi.CmdDelDev:
		if d.info.State == uapi.StateLive && d.info.SrvPID == deadPID {
			d.hungCmd = nrNames[nr]
		}
		if nr == uapi.CmdDelDev {
			delete(k.devs, id)
			return 0
		}
		d.info.State = uapi.StateDead
		return 0
	}
	return errno(unix.EOPNOTSUPP)
}

// deadPID is the pid of a fake server that has died.
const deadPID = 999999

func TestNegotiationPerKernel(t *testing.T) {
	tests := []struct {
		kernel     string
		ioctl      bool // every command after ADD_DEV ioctl-encoded
		userCopy   bool
		addDevTrys int // ADD_DEV sends
	}{
		{"6.1", false, false, 2},
		{"6.4", true, false, 1},
		{"6.6", true, true, 1},
		{"6.8", true, true, 1},
		{"6.12", true, true, 1},
		{"6.12-no-legacy", true, true, 1},
		{"6.13", true, true, 1},
		{"7.0", true, true, 1},
	}
	ks := map[string]*fakeKernel{}
	for _, k := range kernels() {
		ks[k.name] = k
	}
	for _, tt := range tests {
		t.Run(tt.kernel, func(t *testing.T) {
			k := ks[tt.kernel]
			c := newFakeControl(k)
			c.probeFeatures()
			if c.features != k.features {
				t.Errorf("features %#x, want %#x", c.features, k.features)
			}
			opts := Options{Queues: 4, Depth: 64, MaxIO: 512<<10 + 100}
			info := uapi.DevInfo{NrHwQueues: 4, QueueDepth: 64, MaxIOBufBytes: uint32(opts.MaxIO),
				DevID: anyID, Flags: requestFlags(c.features, &opts)}
			k.log = nil
			if err := c.addDev(&info); err != nil {
				t.Fatalf("ADD_DEV: %v", err)
			}
			if n := len(k.log); n != tt.addDevTrys {
				t.Errorf("ADD_DEV sent %d times (%v), want %d", n, k.log, tt.addDevTrys)
			}
			if err := checkGranted(&info); err != nil {
				t.Errorf("granted answer refused: %v", err)
			}
			if got := info.Flags&uapi.FUserCopy != 0; got != tt.userCopy {
				t.Errorf("USER_COPY granted %v, want %v (flags %#x)", got, tt.userCopy, info.Flags)
			}
			if rec := uint64(uapi.FUserRecovery | uapi.FUserRecoveryReissue); info.Flags&rec != rec {
				t.Errorf("recovery not granted: flags %#x", info.Flags)
			}
			if info.MaxIOBufBytes != 512<<10 || info.NrHwQueues != 2 {
				t.Errorf("granted max I/O %d, queues %d: the answer was not read back", info.MaxIOBufBytes, info.NrHwQueues)
			}
			if c.ioctlCodes != tt.ioctl {
				t.Errorf("ioctl codes %v, want %v", c.ioctlCodes, tt.ioctl)
			}
			k.log = nil
			if _, err := c.devInfo(info.DevID); err != nil {
				t.Fatalf("GET_DEV_INFO: %v", err)
			}
			want := "legacy GET_DEV_INFO"
			if tt.ioctl {
				want = "ioctl GET_DEV_INFO"
			}
			if !slices.Equal(k.log, []string{want}) {
				t.Errorf("GET_DEV_INFO sent as %v, want [%s]", k.log, want)
			}
		})
	}
}

// A fresh control on a 6.4 kernel (no GET_FEATURES) for an existing device,
// as `obdfs ublk detach` and ls use it: the encoding is unknown, legacy is
// tried first and the ioctl form after it, also with legacy codes off.
func TestUnknownEncodingFallback(t *testing.T) {
	for _, legacy := range []bool{true, false} {
		k := &fakeKernel{name: "6.4", ioctl: true, legacy: legacy, supported: f64, added: added}
		c := newFakeControl(k)
		c.probeFeatures()
		k.devs[3] = &fakeDev{info: uapi.DevInfo{DevID: 3, NrHwQueues: 1, QueueDepth: 1, Flags: added}}
		di, err := c.devInfo(3)
		if err != nil || di.DevID != 3 {
			t.Errorf("legacy=%v: GET_DEV_INFO = %+v, %v", legacy, di, err)
		}
		_, err = c.devInfo(4)
		if !errors.Is(err, unix.ENODEV) {
			t.Errorf("legacy=%v: GET_DEV_INFO of a missing device = %v, want ENODEV", legacy, err)
		}
	}
}

// The kernel's real verdict is reported, not the "unknown code" answer of the
// other encoding.
func TestAddDevErrorReported(t *testing.T) {
	for _, k := range kernels() {
		c := newFakeControl(k)
		c.probeFeatures()
		k.devs[5] = &fakeDev{info: uapi.DevInfo{DevID: 5}}
		info := uapi.DevInfo{NrHwQueues: 1, QueueDepth: 1, MaxIOBufBytes: 4096, DevID: 5}
		if err := c.addDev(&info); !errors.Is(err, unix.EEXIST) {
			t.Errorf("%s: ADD_DEV of a used id = %v, want EEXIST", k.name, err)
		}
	}
}

func TestRequestFlags(t *testing.T) {
	const rec = uapi.FUserRecovery | uapi.FUserRecoveryReissue
	tests := []struct {
		name     string
		features uint64
		opts     Options
		want     uint64
	}{
		{"6.1/6.4: no GET_FEATURES", 0, Options{}, rec},
		{"6.12", f66, Options{}, rec | uapi.FUserCopy},
		{"7.0", f70, Options{}, rec | uapi.FUserCopy},
		{"no user copy", f66, Options{NoUserCopy: true}, rec},
		{"no recovery", f66, Options{NoRecovery: true}, uapi.FUserCopy},
		{"no recovery, old kernel", 0, Options{NoRecovery: true}, 0},
		{"kernel without REISSUE", f66 &^ uapi.FUserRecoveryReissue, Options{}, uapi.FUserCopy},
	}
	for _, tt := range tests {
		if got := requestFlags(tt.features, &tt.opts); got != tt.want {
			t.Errorf("%s: flags %#x, want %#x", tt.name, got, tt.want)
		}
		// Whatever is requested must pass the 6.13+ recovery check.
		k := &fakeKernel{ioctl: true, legacy: true, features: f613, supported: f613, added: added, recCheck: true}
		c := newFakeControl(k)
		info := uapi.DevInfo{NrHwQueues: 1, QueueDepth: 1, MaxIOBufBytes: 4096, DevID: anyID,
			Flags: requestFlags(tt.features, &tt.opts)}
		if err := c.addDev(&info); err != nil {
			t.Errorf("%s: 6.13 refuses the request: %v", tt.name, err)
		}
	}
}

func TestCheckGranted(t *testing.T) {
	ok := uapi.DevInfo{NrHwQueues: 1, QueueDepth: 8, MaxIOBufBytes: 65536, Flags: added | uapi.FUserCopy | 1<<13}
	if err := checkGranted(&ok); err != nil {
		t.Errorf("%+v refused: %v", ok, err)
	}
	for _, mut := range []func(*uapi.DevInfo){
		func(d *uapi.DevInfo) { d.NrHwQueues = 0 },
		func(d *uapi.DevInfo) { d.QueueDepth = 0 },
		func(d *uapi.DevInfo) { d.MaxIOBufBytes = 0 }, // 4 KiB asked on a 64 KiB-page kernel
		func(d *uapi.DevInfo) { d.MaxIOBufBytes = 64 << 20 },
		func(d *uapi.DevInfo) { d.Flags |= uapi.FNeedGetData },
		func(d *uapi.DevInfo) { d.Flags |= uapi.FSupportZeroCopy },
	} {
		d := ok
		mut(&d)
		if err := checkGranted(&d); err == nil {
			t.Errorf("%+v accepted", d)
		}
	}
}

func TestDetachDecisions(t *testing.T) {
	const livePID = 4242
	alive := func(pid int) bool { return pid == livePID }
	tests := []struct {
		name     string
		kernel   int // index into kernels()
		dev      fakeDev
		timeout  time.Duration
		wantLog  []string // commands after the first GET_DEV_INFO
		wantGone bool
	}{
		{
			// 6.1: the server died 0.5 s ago and the monitor has not run: no
			// STOP/DEL until the state leaves LIVE.
			name: "6.1 dead server, monitor pending", kernel: 0,
			dev:     fakeDev{info: uapi.DevInfo{DevID: 1, State: uapi.StateLive, SrvPID: deadPID}, deadLive: 3},
			timeout: 5 * time.Second,
			wantLog: []string{"legacy GET_DEV_INFO", "legacy GET_DEV_INFO", "legacy GET_DEV_INFO",
				"legacy STOP_DEV", "legacy GET_DEV_INFO", "legacy DEL_DEV"},
			wantGone: true,
		},
		{
			name: "6.12 dead server already DEAD", kernel: 4,
			dev:      fakeDev{info: uapi.DevInfo{DevID: 1, State: uapi.StateDead, SrvPID: -1, Flags: added}},
			timeout:  5 * time.Second,
			wantLog:  []string{"ioctl STOP_DEV", "ioctl GET_DEV_INFO", "ioctl DEL_DEV"},
			wantGone: true,
		},
		{
			name: "6.12 quiesced (recovery), server dead", kernel: 4,
			dev:      fakeDev{info: uapi.DevInfo{DevID: 1, State: uapi.StateQuiesced, SrvPID: deadPID, Flags: added}},
			timeout:  5 * time.Second,
			wantLog:  []string{"ioctl STOP_DEV", "ioctl GET_DEV_INFO", "ioctl DEL_DEV"},
			wantGone: true,
		},
		{
			// A live server deletes the device itself after STOP_DEV: Detach
			// must not race it with its own DEL_DEV.
			name: "6.12 live server deletes it", kernel: 4,
			dev:      fakeDev{info: uapi.DevInfo{DevID: 1, State: uapi.StateLive, SrvPID: livePID, Flags: added}},
			timeout:  5 * time.Second,
			wantLog:  []string{"ioctl STOP_DEV", "ioctl GET_DEV_INFO", "ioctl DEL_DEV(server)", "ioctl GET_DEV_INFO"},
			wantGone: true,
		},
		{
			// A live server that never deletes it: deleted here after timeout.
			name: "6.1 live server stuck", kernel: 0,
			dev:      fakeDev{info: uapi.DevInfo{DevID: 1, State: uapi.StateLive, SrvPID: livePID}},
			timeout:  30 * time.Millisecond,
			wantGone: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := kernels()[tt.kernel]
			c := newFakeControl(k)
			c.probeFeatures()
			d := tt.dev
			k.devs[1] = &d
			k.log = nil
			if d.info.SrvPID == livePID && tt.wantLog != nil {
				c.send = serverDeletes(k, c)
			}
			if err := detach(c, 1, tt.timeout, time.Millisecond, alive); err != nil {
				t.Fatalf("detach: %v", err)
			}
			if got := k.devs[1] == nil; got != tt.wantGone {
				t.Errorf("device gone %v, want %v", got, tt.wantGone)
			}
			if d.hungCmd != "" {
				t.Errorf("%s sent while LIVE with a dead server (hangs on 6.1)", d.hungCmd)
			}
			if tt.wantLog != nil && !slices.Equal(k.log[1:], tt.wantLog) {
				t.Errorf("commands\n %v\nwant\n %v", k.log[1:], tt.wantLog)
			}
			if tt.wantLog == nil && !slices.Contains(k.log, "legacy DEL_DEV") {
				t.Errorf("no DEL_DEV after the timeout: %v", k.log)
			}
		})
	}
}

// serverDeletes wraps the fake kernel so that, once STOP_DEV has been sent,
// the next command finds the device deleted by its (emulated) server.
func serverDeletes(k *fakeKernel, c *control) func(op, id uint32, n int, data uint64) (int32, error) {
	stopped, deleted := false, false
	return func(op, id uint32, n int, data uint64) (int32, error) {
		if stopped && !deleted && k.devs[id] != nil && op&0xff == uapi.CmdGetDevInfo {
			if strings.Contains(k.log[len(k.log)-1], "GET_DEV_INFO") {
				deleted = true
				delete(k.devs, id)
				k.log = append(k.log, "ioctl DEL_DEV(server)")
			}
		}
		res := k.cmd(c.buf[:n], op, id)
		if op&0xff == uapi.CmdStopDev {
			stopped = true
		}
		return res, nil
	}
}

// A completion left over from a command whose wait failed must not be taken
// for the next command's answer. A 16-byte read of /dev/zero (res 16) stands
// for the stale one; the command itself is a URING_CMD on /dev/null, which
// the kernel answers with 0 or an error, never 16.
func TestControlSkipsStaleCompletion(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	ring, err := uring.New(4, uring.SetupSQE128)
	if err != nil {
		t.Skipf("io_uring not available here: %v", err)
	}
	defer ring.Close()
	c := &control{f: null, ring: ring, buf: make([]byte, 64)}
	c.send = c.raw
	c.seq = 7
	if err := ring.PrepRead(int(zero.Fd()), c.buf[:16], 0, 7); err != nil {
		t.Fatal(err)
	}
	res, err := c.raw(uapi.CtrlIoctl(uapi.CmdGetDevInfo), 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res == 16 {
		t.Error("the stale read's completion was taken as the command's answer")
	}
	if ring.Ready() != 0 {
		t.Errorf("%d completions left on the ring", ring.Ready())
	}
}
