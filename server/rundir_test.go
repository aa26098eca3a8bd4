package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The run directory is made private, and one that another user could have
// planted (a symlink, a directory writable by others, one owned by someone
// else) is refused with the reason.
func TestPrepareRunDir(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "a", "b")
	if err := PrepareRunDir(fresh); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(fresh); err != nil || st.Mode().Perm() != 0o700 || !st.IsDir() {
		t.Fatalf("new run directory: %v %v", st.Mode(), err)
	}
	if err := PrepareRunDir(fresh); err != nil {
		t.Fatalf("existing private run directory: %v", err)
	}
	link := filepath.Join(base, "link")
	os.Symlink(fresh, link)
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	cases := []struct{ dir, want string }{
		{link, "not a directory (a symlink?)"},
		{open, "writable by others"},
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		os.Mkdir(other, 0o700)
		os.Chown(other, 65534, 65534)
		cases = append(cases, struct{ dir, want string }{other, "owned by uid 65534"})
	} else {
		t.Log("not root: the foreign-owner case is not checked")
	}
	for _, tc := range cases {
		if err := PrepareRunDir(tc.dir); err == nil || !strings.Contains(err.Error(), tc.dir) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.dir, err, tc.want)
		}
		if _, err := Call(filepath.Join(tc.dir, "x.sock"), Request{Op: "ping"}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("client through %s: %v, want %q", tc.dir, err, tc.want)
		}
	}
}
