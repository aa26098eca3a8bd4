package filelock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func open(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Two opens of one file in one process conflict like two processes do, the
// refusal names this process, and closing the holder frees the file.
func TestConflicts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "layer")
	for _, tc := range []struct {
		name         string
		first, then  func(*os.File) error
		wantConflict bool
		wantWhat     string
	}{
		{"exclusive then exclusive", Exclusive, Exclusive, true, "open for writing by pid "},
		{"exclusive then shared", Exclusive, Shared, true, "open for writing by pid "},
		{"shared then exclusive", Shared, Exclusive, true, "open for reading by pid "},
		{"shared then shared", Shared, Shared, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := open(t, p), open(t, p)
			if err := tc.first(a); err != nil {
				t.Fatal(err)
			}
			err := tc.then(b)
			if !tc.wantConflict {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("second lock: %v, want ErrLocked", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, p) || !strings.Contains(msg, tc.wantWhat+strconv.Itoa(os.Getpid())) {
				t.Fatalf("error %q does not name the file and this process", msg)
			}
			a.Close()
			if err := tc.then(b); err != nil {
				t.Fatalf("after the holder closed: %v", err)
			}
		})
	}
}

func TestParseProcLocks(t *testing.T) {
	in := "1: FLOCK  ADVISORY  WRITE 15975 fe:00:9981163 0 EOF\n" +
		"1: -> FLOCK  ADVISORY  WRITE 16002 fe:00:9981163 0 EOF\n" +
		"2: OFDLCK ADVISORY  READ -1 08:11:42 0 EOF\n" +
		"3: POSIX  ADVISORY  WRITE x fe:00:1 0 EOF\n" +
		"garbage\n\n"
	got := ParseProcLocks([]byte(in))
	want := []Entry{
		{Kind: "FLOCK", Write: true, Pid: 15975, Major: 0xfe, Minor: 0, Inode: 9981163},
		{Kind: "OFDLCK", Write: false, Pid: -1, Major: 8, Minor: 0x11, Inode: 42},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func FuzzParseProcLocks(f *testing.F) {
	f.Add([]byte("1: FLOCK  ADVISORY  WRITE 15975 fe:00:9981163 0 EOF\n2: -> POSIX ADVISORY READ 1 0:0:0 0 9\n"))
	if b, err := os.ReadFile("/proc/locks"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, e := range ParseProcLocks(b) {
			if e.Kind == "" || e.Kind == "->" {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}
