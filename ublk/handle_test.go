package ublk

import (
	"bytes"
	"io"
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/obdfs/obdfs/disk"
	"github.com/obdfs/obdfs/ublk/internal/uapi"
)

// flushCounter counts Flush calls on a disk.
type flushCounter struct {
	*disk.Mem
	flushes int
}

func (f *flushCounter) Flush() error { f.flushes++; return f.Mem.Flush() }

// Host-side test of the request handler (buffer mode), with requests the
// kernel may send and some it should never send.
func TestHandleRequests(t *testing.T) {
	const size = 64 << 10
	const maxIO = 16 << 10
	ones := bytes.Repeat([]byte{1}, size)
	tests := []struct {
		name      string
		op        uint32 // op | flags
		off, n    int64  // bytes
		want      int32
		zeroed    [2]int64 // byte range that must now read as zeros
		flushes   int
		unchanged bool // disk content must be untouched
	}{
		{name: "read", op: uapi.OpRead, off: 4096, n: 8192, want: 8192, unchanged: true},
		{name: "write FUA flushes", op: uapi.OpWrite | uapi.IOFFUA, off: 0, n: 4096, want: 4096, flushes: 1},
		{name: "flush", op: uapi.OpFlush, want: 0, flushes: 1, unchanged: true},
		{name: "discard", op: uapi.OpDiscard, off: 8192, n: 4096, want: 0, zeroed: [2]int64{8192, 12288}},
		{name: "write zeroes", op: uapi.OpWriteZeroes, off: 512, n: 1024, want: 0, zeroed: [2]int64{512, 1536}},
		{name: "write zeroes NOUNMAP", op: uapi.OpWriteZeroes | uapi.IOFNoUnmap, off: 0, n: 40960, want: 0, zeroed: [2]int64{0, 40960}},
		{name: "discard past the end", op: uapi.OpDiscard, off: size - 4096, n: 8192, want: -int32(unix.EIO), unchanged: true},
		{name: "write past the end", op: uapi.OpWrite, off: size - 512, n: 1024, want: -int32(unix.EIO), unchanged: true},
		{name: "write zeroes past the end", op: uapi.OpWriteZeroes | uapi.IOFNoUnmap, off: size, n: 512, want: -int32(unix.EIO), unchanged: true},
		{name: "read larger than the buffer", op: uapi.OpRead, off: 0, n: 2 * maxIO, want: -int32(unix.EIO), unchanged: true},
		{name: "zone open", op: 10, off: 0, n: 4096, want: -int32(unix.EOPNOTSUPP), unchanged: true},
		{name: "zone append", op: 13, off: 0, n: 4096, want: -int32(unix.EOPNOTSUPP), unchanged: true},
		{name: "report zones", op: 18, want: -int32(unix.EOPNOTSUPP), unchanged: true},
		{name: "write same", op: uapi.OpWriteSame, off: 0, n: 512, want: -int32(unix.EOPNOTSUPP), unchanged: true},
		{name: "unknown op", op: 0x7f, want: -int32(unix.EOPNOTSUPP), unchanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &flushCounter{Mem: disk.NewMem(ones, false)}
			dev := &Device{disk: d, size: size, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			q := &queue{dev: dev, depth: 1, maxIO: maxIO, mem: make([]byte, maxIO)}
			copy(q.mem, bytes.Repeat([]byte{7}, maxIO)) // what a WRITE would carry
			r := request{desc: uapi.IODesc{OpFlags: tt.op, StartSector: uint64(tt.off >> 9), NrSectors: uint32(tt.n >> 9)}}
			if got := q.handle(r); got != tt.want {
				t.Fatalf("result %d, want %d", got, tt.want)
			}
			if d.flushes != tt.flushes {
				t.Errorf("%d flushes, want %d", d.flushes, tt.flushes)
			}
			got := make([]byte, size)
			d.ReadAt(got, 0)
			if tt.unchanged && !bytes.Equal(got, ones) {
				t.Error("disk content changed")
			}
			if z := tt.zeroed; z[1] > 0 {
				if !bytes.Equal(got[z[0]:z[1]], make([]byte, z[1]-z[0])) {
					t.Errorf("[%d, %d) does not read as zeros", z[0], z[1])
				}
				if !bytes.Equal(got[z[1]:], ones[z[1]:]) || !bytes.Equal(got[:z[0]], ones[:z[0]]) {
					t.Error("bytes outside the range changed")
				}
			}
			if tt.op&0xff == uapi.OpRead && tt.want > 0 && !bytes.Equal(q.mem[:tt.n], ones[tt.off:tt.off+tt.n]) {
				t.Error("read data wrong")
			}
		})
	}
}
