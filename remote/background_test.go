package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// waitBackground polls until the blob's background download leaves the
// waiting/running states.
func waitBackground(t *testing.T, b *Blob) Stats {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := b.Stats()
		if st.Background != bgWaiting && st.Background != bgRunning {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("background download still %q after 60 s: %+v", st.Background, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBackgroundDownload(t *testing.T) {
	const size, chunk = 8 << 20, 64 << 10
	url, dig, data, f := randomBlob(t, size)
	open := func(t *testing.T, o Options) *Blob {
		b, err := OpenBlob(context.Background(), url, dig, size, o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	base := func(t *testing.T) Options {
		o := testOptions(t)
		o.RefillSize = chunk
		o.Background = BackgroundOptions{Enable: true}
		return o
	}

	t.Run("complete, verified, then local", func(t *testing.T) {
		o := base(t)
		o.Background.MaxBytesPerSec = 8 << 20 // two 4 MiB GETs: the second starts at 0.5 s
		b := open(t, o)
		defer b.Close()
		start := time.Now()
		st := waitBackground(t, b)
		if el := time.Since(start); el < 500*time.Millisecond {
			t.Errorf("8 MiB at 8 MiB/s done in %v", el)
		}
		if st.Background != bgDone || !st.Verified || st.Cached != size || st.BackgroundBytes != size {
			t.Fatalf("after the download: %+v", st)
		}
		g := f.gets.Load()
		if sum := blobSum(t, b); sum != dig {
			t.Fatalf("content %s", sum)
		}
		if f.gets.Load() != g {
			t.Errorf("reads after the download made %d GETs", f.gets.Load()-g)
		}
	})

	t.Run("completed by readers meanwhile", func(t *testing.T) {
		b := open(t, base(t))
		defer b.Close()
		if sum := blobSum(t, b); sum != dig { // races the download for every chunk
			t.Fatalf("content %s", sum)
		}
		if st := waitBackground(t, b); st.Background != bgDone || !st.Verified || st.FetchedBytes != size {
			t.Fatalf("after the download: %+v", st)
		}
	})

	t.Run("delay", func(t *testing.T) {
		o := base(t)
		o.Background.Delay = time.Hour
		b := open(t, o)
		time.Sleep(200 * time.Millisecond)
		if st := b.Stats(); st.Background != bgWaiting || st.FetchedBytes != 0 {
			t.Errorf("during the delay: %+v", st)
		}
		start := time.Now()
		b.Close()
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("Close took %v during the delay", el)
		}
		if st := b.Stats(); st.Background != bgCanceled {
			t.Errorf("after Close: %q", st.Background)
		}
	})

	t.Run("cache bound", func(t *testing.T) {
		o := base(t)
		o.CacheMax = 4 << 20 // half the blob
		b := open(t, o)
		defer b.Close()
		st := waitBackground(t, b)
		if st.Background != bgFull || st.BackgroundBytes != 0 {
			t.Errorf("blob twice the cache bound: %+v", st)
		}
		// Readers are still served.
		p := make([]byte, 1000)
		if _, err := b.ReadAt(p, 12345); err != nil || !bytes.Equal(p, data[12345:13345]) {
			t.Errorf("read: %v", err)
		}
	})

	t.Run("wrong bytes are dropped", func(t *testing.T) {
		f.set("wrong", -1)
		o := base(t)
		b := open(t, o)
		defer b.Close()
		st := waitBackground(t, b)
		f.set("", 0)
		if st.Background != bgFailed || st.Verified || st.Cached != 0 {
			t.Fatalf("after a download with corrupted bytes: %+v", st)
		}
		if sum := blobSum(t, b); sum != dig {
			t.Fatalf("content after refetch %s", sum)
		}
	})
}

// TestBackgroundResume: a process downloading in the background is killed
// with SIGKILL; a new one resumes from what the cache map recorded, fetches
// only the rest, and ends with the verified blob.
func TestBackgroundResume(t *testing.T) {
	const size, chunk = 16 << 20, 64 << 10
	url, dig, _, _ := randomBlob(t, size)
	cache := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "OBDFS_BG_CHILD="+strings.Join([]string{url, dig, strconv.Itoa(size), cache}, "|"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hexd := strings.TrimPrefix(dig, "sha256:")
	mapPath := filepath.Join(cache, "blobs", "sha256", hexd+".map")
	deadline := time.Now().Add(60 * time.Second)
	var have int
	for {
		if m, err := readMap(mapPath); err == nil {
			have = 0
			for _, x := range m.bitmap {
				have += bits.OnesCount8(x)
			}
			if have >= 64 { // a first 4 MiB GET recorded: kill mid-blob
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the child recorded no chunk in 60 s:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if have*chunk >= size {
		t.Fatalf("the child completed the blob before it was killed")
	}

	o := testOptions(t)
	o.CacheDir, o.RefillSize = cache, chunk
	o.Background = BackgroundOptions{Enable: true}
	b, err := OpenBlob(context.Background(), url, dig, size, o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	resumed := b.CachedBytes()
	if resumed < int64(have)*chunk {
		t.Fatalf("after the restart %d bytes cached; the killed process's map recorded %d", resumed, have*chunk)
	}
	st := waitBackground(t, b)
	if st.Background != bgDone || !st.Verified || st.Cached != size {
		t.Fatalf("after the resumed download: %+v", st)
	}
	if st.BackgroundBytes != size-resumed {
		t.Errorf("fetched %d bytes; %d were cached and %d missing", st.BackgroundBytes, resumed, size-resumed)
	}
	h := sha256.New()
	io.Copy(h, io.NewSectionReader(b, 0, size))
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dig {
		t.Fatalf("content %s", got)
	}
	t.Logf("killed with %d of %d chunks recorded; resumed with %d bytes", have, size/chunk, resumed)
}

// TestMain runs the child process of TestBackgroundResume when asked to.
func TestMain(m *testing.M) {
	if env := os.Getenv("OBDFS_BG_CHILD"); env != "" {
		backgroundChild(env)
		return
	}
	os.Exit(m.Run())
}

// backgroundChild is the process TestBackgroundResume kills: it downloads
// a blob slowly in the background until killed.
func backgroundChild(env string) {
	p := strings.Split(env, "|")
	size, _ := strconv.ParseInt(p[2], 10, 64)
	o := Options{CacheDir: p[3], RefillSize: 64 << 10, Keychain: authn.NewMultiKeychain(),
		Background: BackgroundOptions{Enable: true, MaxBytesPerSec: 2 << 20}}
	b, err := OpenBlob(context.Background(), p[0], p[1], size, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer b.Close()
	time.Sleep(time.Minute)
	os.Exit(1) // never reached in the test: it is killed
}
