package disk_test

import (
	"errors"
	"testing"

	"github.com/obdfs/obdfs/disk"
)

func TestReadOnlyView(t *testing.T) {
	m := disk.NewMem([]byte("abcdefgh"), false)
	v := disk.ReadOnlyView(m)
	if !v.ReadOnly() {
		t.Fatal("view is not read-only")
	}
	if _, err := v.WriteAt([]byte("x"), 0); !errors.Is(err, disk.ErrReadOnly) {
		t.Fatalf("WriteAt: %v", err)
	}
	if err := v.Discard(0, 1); !errors.Is(err, disk.ErrReadOnly) {
		t.Fatalf("Discard: %v", err)
	}
	b := make([]byte, 3)
	if n, err := v.ReadAt(b, 2); n != 3 || err != nil || string(b) != "cde" {
		t.Fatalf("ReadAt: %d %v %q", n, err, b)
	}
	if m.ReadOnly() {
		t.Fatal("the view changed the disk below")
	}
	ro := disk.NewMem(nil, true)
	if disk.ReadOnlyView(ro) != disk.Disk(ro) {
		t.Fatal("a read-only disk is wrapped again")
	}
}
