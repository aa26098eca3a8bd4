package uring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T, entries, flags uint32) *Ring {
	t.Helper()
	r, err := New(entries, flags)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOMEM) {
			t.Skipf("io_uring not available here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestLayout(t *testing.T) {
	if s := unsafe.Sizeof(params{}); s != 120 {
		t.Errorf("sizeof io_uring_params = %d, want 120", s)
	}
	if o := unsafe.Offsetof(params{}.SQOff); o != 40 {
		t.Errorf("sq_off at %d, want 40", o)
	}
	if o := unsafe.Offsetof(params{}.CQOff); o != 80 {
		t.Errorf("cq_off at %d, want 80", o)
	}
	if s := unsafe.Sizeof(CQE{}); s != 16 {
		t.Errorf("sizeof cqe = %d, want 16", s)
	}
}

func TestNop(t *testing.T) {
	for _, flags := range []uint32{0, SetupSQE128} {
		r := newRing(t, 4, flags)
		if r.Entries() != 4 {
			t.Fatalf("entries = %d, want 4", r.Entries())
		}
		// Go round the ring several times so the index wraps.
		for i := uint64(0); i < 20; i++ {
			for j := uint64(0); j < 3; j++ {
				if err := r.PrepNop(i*10 + j); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Submit(3); err != nil {
				t.Fatal(err)
			}
			var got []uint64
			r.Reap(func(c CQE) {
				if c.Res != 0 {
					t.Errorf("nop res = %d", c.Res)
				}
				got = append(got, c.UserData)
			})
			if len(got) != 3 || got[0] != i*10 || got[2] != i*10+2 {
				t.Fatalf("round %d: completions %v", i, got)
			}
		}
	}
}

func TestRingFull(t *testing.T) {
	r := newRing(t, 2, 0)
	for i := 0; i < 2; i++ {
		if err := r.PrepNop(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.PrepNop(9); !errors.Is(err, ErrRingFull) {
		t.Fatalf("third prep on a 2-entry ring: %v, want ErrRingFull", err)
	}
	if _, err := r.WaitOne(); err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	r := newRing(t, 8, 0)
	want := bytes.Repeat([]byte("obdfs uring "), 1000)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	if err := r.PrepRead(int(f.Fd()), buf[:100], 1200, 77); err != nil {
		t.Fatal(err)
	}
	c, err := r.WaitOne()
	if err != nil {
		t.Fatal(err)
	}
	if c.UserData != 77 || c.Res != 100 {
		t.Fatalf("cqe = %+v, want user_data 77 res 100", c)
	}
	if !bytes.Equal(buf[:100], want[1200:1300]) {
		t.Fatalf("read %q, want %q", buf[:100], want[1200:1300])
	}
}

// URING_CMD without ublk: /dev/null implements a no-op uring_cmd (6.0+),
// which exercises the SQE encoding (the kernel rejects non-zero padding), and
// a regular file implements none, which must fail cleanly.
func TestURingCmd(t *testing.T) {
	r := newRing(t, 4, SetupSQE128)
	null, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	reg, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for _, tt := range []struct {
		name   string
		fd     int
		wantOK bool
	}{{"/dev/null", int(null.Fd()), true}, {"regular file", int(reg.Fd()), false}} {
		if err := r.PrepURingCmd(tt.fd, 0x1234, make([]byte, 32), 5); err != nil {
			t.Fatal(err)
		}
		c, err := r.WaitOne()
		if err != nil {
			t.Fatal(err)
		}
		if c.UserData != 5 || (c.Res == 0) != tt.wantOK {
			t.Errorf("%s: cqe = %+v, want user_data 5, success %v", tt.name, c, tt.wantOK)
		}
	}
	if err := r.PrepURingCmd(0, 1, make([]byte, 81), 0); err == nil {
		t.Fatal("81-byte payload accepted on an SQE128 ring")
	}
}

func TestRoundUpPow2(t *testing.T) {
	for _, tt := range []struct{ in, want uint32 }{{0, 1}, {1, 1}, {2, 2}, {3, 4}, {128, 128}, {129, 256}} {
		if got := RoundUpPow2(tt.in); got != tt.want {
			t.Errorf("RoundUpPow2(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// BenchmarkNop is the ring's own cost: prepare, submit and reap NOPs, batch
// requests per io_uring_enter (the queue loop commits in batches likewise).
func BenchmarkNop(b *testing.B) {
	for _, batch := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch%d", batch), func(b *testing.B) {
			r, err := New(32, 0)
			if err != nil {
				b.Skipf("io_uring not available here: %v", err)
			}
			defer r.Close()
			b.ReportAllocs()
			for i := 0; i < b.N; i += batch {
				for j := 0; j < batch; j++ {
					r.PrepNop(uint64(j))
				}
				if err := r.Submit(uint32(batch)); err != nil {
					b.Fatal(err)
				}
				r.Reap(func(CQE) {})
			}
		})
	}
}
